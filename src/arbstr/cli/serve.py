"""``arbstr serve``: load the config (or none, with --mock), then run the proxy."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from arbstr.cli.common import ConfigOpt, fail
from arbstr.config import Config, load_config, resolve_config_path
from arbstr.errors import ConfigError

if TYPE_CHECKING:
    from types import FrameType


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(
    config: ConfigOpt = None,
    listen: Annotated[
        str | None, typer.Option("--listen", "-l", help="HOST:PORT, overrides server.listen")
    ] = None,
    mock: Annotated[
        bool, typer.Option("--mock", help="Serve built-in mock providers; needs no config")
    ] = False,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Request log: SQLite path or postgresql:// URL"),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback listen without auth_token")
    ] = False,
    log_level: Annotated[
        str, typer.Option("--log-level", envvar="ARBSTR_LOG", help="debug|info|warning|error")
    ] = "info",
) -> None:
    """Run the proxy."""
    from arbstr.config import DEFAULT_LISTEN, config_from_data, parse_listen, resolve_db_path
    from arbstr.logs import setup_logging
    from arbstr.server.runner import check_listen_safety, run
    from arbstr.server.runner import serve as serve_async

    try:
        log_writer = setup_logging(log_level)
    except ValueError as exc:
        raise fail(str(exc)) from None
    try:
        cfg: Config | None
        if mock:
            path = resolve_config_path(config)
            explicit = config is not None or "ARBSTR_CONFIG" in os.environ
            cfg = load_config(path) if explicit else None
            if cfg is None:
                cfg = config_from_data({}, source="<mock>", env={})
        else:
            cfg = load_config(resolve_config_path(config))
        if listen is not None:
            parse_listen(listen, where="--listen")
            cfg = cfg.with_listen(listen)
        elif mock and cfg.source == "<mock>":
            cfg = cfg.with_listen(DEFAULT_LISTEN)
        cfg = cfg.with_db_path(resolve_db_path(db, cfg, os.environ))
        check_listen_safety(cfg, insecure)
    except ConfigError as exc:
        log_writer.stop()
        raise fail(str(exc)) from None
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it with the handler that was in
    # place before: the default one would kill the process (exit -15) before the `finally`
    # blocks below and in the runner (mocks, request log, log queue) have run.
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        run(serve_async(cfg, mock=mock, listen=None))
    except KeyboardInterrupt:
        pass
    finally:
        log_writer.stop()
