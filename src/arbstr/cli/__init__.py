"""Command line: parse arguments, call into the package, print (see :mod:`.commands`)."""

from arbstr.cli.commands import app, main

__all__ = ["app", "main"]
