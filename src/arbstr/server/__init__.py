"""The ASGI server side of arbstr."""

from arbstr.server.app import App
from arbstr.server.gateway import Gateway

__all__ = ["App", "Gateway"]
