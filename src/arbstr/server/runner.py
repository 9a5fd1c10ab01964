"""Running the proxy: config (or built-in mocks) -> Gateway -> uvicorn, until a signal."""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
from collections.abc import Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import uvicorn

from arbstr.config import DEFAULT_DB_PATH, Config, config_from_data
from arbstr.errors import ConfigError
from arbstr.server import App, Gateway
from arbstr.storage import Store

if TYPE_CHECKING:
    from arbstr.mock import MockProvider

log = logging.getLogger("arbstr")


def check_listen_safety(config: Config, insecure: bool) -> None:
    s = config.server
    if not s.is_loopback and s.auth_token is None and not insecure:
        raise ConfigError(
            f"refusing to listen on {s.host}:{s.port} (not a loopback address) without"
            " server.auth_token; set one, or pass --insecure if you really mean it"
        )


async def mock_config(
    chunk_delay_s: float = 0.02, *, base: Config | None = None
) -> tuple[Config, list[MockProvider]]:
    """Start the built-in mock providers and a config that points at them."""
    from arbstr.mock import mock_config_data, start_mock_providers  # aiohttp.web: only for --mock

    mocks = await start_mock_providers(chunk_delay_s=chunk_delay_s)
    data = mock_config_data(mocks)
    # the built-in mock keys are literal on purpose: no "literal key" warnings for them
    cfg = replace(config_from_data(data, source="<mock>", env={}), warnings=())
    if base is not None:  # keep the caller's server, retry and database settings
        cfg = replace(cfg, server=base.server, retry=base.retry, db_path=base.db_path)
    return cfg, mocks


async def serve(config: Config | None, *, mock: bool, listen: str | None) -> None:
    mocks: list[MockProvider] = []
    if mock:
        config, mocks = await mock_config(base=config)
        log.info("mock providers: %s", ", ".join(f"{m.spec.name}={m.url}" for m in mocks))
    assert config is not None
    if listen is not None:
        config = config.with_listen(listen)
    for w in config.warnings:
        log.warning("%s", w)
    # never raises for database trouble: the proxy then serves without a request log
    store = await asyncio.to_thread(Store.open, config.db_path or DEFAULT_DB_PATH)
    gw = Gateway(config, sink=store)
    uv = uvicorn.Config(
        App(gw),
        host=config.server.host,
        port=config.server.port,
        http="httptools",
        loop="none",
        lifespan="on",
        access_log=False,
        server_header=False,
        proxy_headers=False,  # arbstr never uses the client address; saves work per request
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(uv)
    raise_fd_limit()
    tune_gc()
    log.info(
        "arbstr listening on http://%s:%d (%d providers)",
        config.server.host,
        config.server.port,
        len(config.providers),
    )
    try:
        await server.serve()
    finally:
        await asyncio.to_thread(store.close)  # normally done at lifespan shutdown; idempotent
        for m in mocks:
            await m.close()


# open files wanted: each stream holds a client and an upstream socket, and 1024 (the usual
# soft default) runs out at ~500 streams; the hard limit is usually far higher
FD_LIMIT_TARGET = 65536


def fd_limit_target(soft: int, hard: int, want: int = FD_LIMIT_TARGET) -> int | None:
    """The soft ``RLIMIT_NOFILE`` to set: ``want`` capped by ``hard``; None to leave it."""
    infinity = resource.RLIM_INFINITY
    if soft == infinity:
        return None
    target = want if hard == infinity else min(want, hard)
    return target if target > soft else None


def raise_fd_limit(want: int = FD_LIMIT_TARGET) -> int:
    """Raise this process's soft open-file limit towards ``want`` (never above the hard
    limit; an unprivileged process may do that). Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = fd_limit_target(soft, hard, want)
    if target is None:
        log.debug("open file limit %s (hard %s) left as it is", soft, hard)
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.debug("open file limit %s not raised to %s: %s", soft, target, exc)
        return soft
    log.debug("open file limit raised from %s to %s (hard %s)", soft, target, hard)
    return target


GC_THRESHOLDS = (10_000, 100, 10)


def tune_gc() -> None:
    """Fewer cyclic-GC passes: the request path makes almost no reference cycles, so the
    default gen-0 threshold only burns CPU; objects alive at start-up are frozen out of full
    collections, which then pause the event loop less. A gen-1 pass walks every object of
    every open stream (~50 ms at 1,000 streams), so it runs after 100 gen-0 passes, not 10
    (measured in bench/README.md, "Profile" and "Many streams")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on uvloop when available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-posix
        asyncio.run(coro)
        return
    uvloop.run(coro)
