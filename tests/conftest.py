"""Shared pytest fixtures."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from arbstr import logs
from arbstr.mock import MockProvider, start_mock_providers
from fake_routstr import FakeRoutstr, NodeModel
from fake_upstream import FakeUpstream
from harness import ProxyThread
from pg_server import PgServer, running_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server for the whole session (tests/pg_server.py), started on first
    use; skips when no PostgreSQL binaries are installed (`make test` installs them)."""
    with running_server() as server:
        if server is None:
            pytest.skip("PostgreSQL binaries not installed (make test installs them)")
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each request-log test runs once per backend."""
    return str(request.param)


@pytest.fixture
def log_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A new, empty request log of the backend under test: a SQLite path or the URL of a
    fresh PostgreSQL database."""
    if backend == "sqlite":
        return str(tmp_path / "log.db")
    server: PgServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A started scripted fake upstream (see tests/fake_upstream.py)."""
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def mock_providers() -> AsyncIterator[list[MockProvider]]:
    """The default built-in mock providers (mock-alpha cheaper than mock-beta), started."""
    providers = await start_mock_providers()
    try:
        yield providers
    finally:
        for provider in providers:
            await provider.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Puts the logging setup (handlers, levels, the log writer thread) back after the test."""
    saved = {
        n: (
            logging.getLogger(n).handlers[:],
            logging.getLogger(n).level,
            logging.getLogger(n).propagate,
        )
        for n in ("arbstr", "uvicorn", "uvicorn.error")
    }
    old_writer = logs._writer
    yield None
    if logs._writer is not None and logs._writer is not old_writer:
        logs._writer.stop()
    logs._writer = old_writer
    for n, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(n)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


@pytest.fixture
def proxies() -> Iterator[list[ProxyThread]]:
    """Proxies a test starts (append them); stopped at the end of the test."""
    started: list[ProxyThread] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture
def routstr_node() -> Iterator[Callable[..., FakeRoutstr]]:
    """Starts fake Routstr nodes (tests/fake_routstr.py): ``routstr_node(models, keys=...)``;
    closed at the end of the test (ask for it before ``proxies``, so proxies stop first)."""
    started: list[FakeRoutstr] = []

    def start(models: Sequence[NodeModel], **kw: Any) -> FakeRoutstr:
        node = FakeRoutstr(models, **kw).start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.close()
