"""The proxy under test: a real uvicorn on an ephemeral loopback port, in its own thread and
event loop, so that both async tests (aiohttp) and sync clients (the openai SDK) can use it."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from arbstr.apis.base import Api
from arbstr.apis.registry import APIS
from arbstr.config import Config, config_from_data
from arbstr.mock import MockProvider, mock_config_data, start_mock_providers
from arbstr.records import MemorySink, RecordSink
from arbstr.server import App, Gateway

ConfigFactory = Callable[[], Awaitable[Config]]


def make_config(data: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    return config_from_data(data, source="<test>", env=env or {})


def provider(name: str, url: str, **kw: Any) -> dict[str, Any]:
    """A provider config entry with sensible test defaults (no balance polling: a test that
    wants it sets ``balance_interval_s``, so that other tests' upstreams see only chats)."""
    entry: dict[str, Any] = {
        "name": name,
        "url": url,
        "api_key": f"sk-test-{name}-0123456789",
        "models": ["gpt-4o"],
        "input_rate": 10,
        "output_rate": 30,
        "base_fee": 0,
        "balance_interval_s": 0,
    }
    entry.update(kw)
    return entry


class ProxyThread:
    def __init__(
        self,
        config: Config | ConfigFactory,
        *,
        sink: RecordSink | None = None,
        with_mocks: bool = False,
        mock_chunk_delay_s: float = 0.0,
        apis: tuple[Api, ...] = APIS,
        http: str = "httptools",  # uvicorn's HTTP implementation, as arbstr serve uses
    ) -> None:
        self._config = config
        self._http = http
        self._apis = apis
        self.sink: RecordSink = sink if sink is not None else MemorySink()
        self._with_mocks = with_mocks
        self._mock_delay = mock_chunk_delay_s
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="arbstr-proxy", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self.mocks: list[MockProvider] = []
        self.gateway: Gateway | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def records(self) -> list[Any]:
        assert isinstance(self.sink, MemorySink)
        return self.sink.records

    def start(self) -> ProxyThread:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("proxy did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._server is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(setattr, self._server, "should_exit", True)
        self._thread.join(15)

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        import uvloop

        try:
            uvloop.run(self._main())
        except BaseException as exc:  # surfaced to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._with_mocks:
            self.mocks = await start_mock_providers(chunk_delay_s=self._mock_delay)
            config = make_config(mock_config_data(self.mocks))
        elif isinstance(self._config, Config):
            config = self._config
        else:
            config = await self._config()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.gateway = Gateway(config, sink=self.sink)
        uv = uvicorn.Config(
            App(self.gateway, self._apis),
            http=self._http,
            loop="none",
            lifespan="on",
            access_log=False,
            log_config=None,
            log_level="warning",
        )
        self._server = uvicorn.Server(uv)
        task = asyncio.create_task(self._server.serve(sockets=[sock]))
        for _ in range(3000):  # up to 15 s; uvicorn exposes no "started" event
            if self._server.started or task.done():
                break
            await asyncio.sleep(0.005)
        self._ready.set()
        try:
            await task
        finally:
            for m in self.mocks:
                await m.close()
