"""One attempt against one provider, with a classified outcome.

An attempt either succeeds (:class:`JsonReply` / :class:`StreamReply`) or raises
:class:`AttemptFailed`, whose ``kind`` says what happened and whether retrying is safe:

* ``connect``  — never sent (refused, DNS, connect timeout): always safe to retry.
* ``status``   — the provider answered 429/5xx (retryable: with Routstr ``sk-`` keys a failed
  request is not charged) or another 4xx (not retried: passed to the client as is).
* ``funds``    — a 402, or a 4xx (not 429) saying ``insufficient_balance`` or
  ``balance_limit_exceeded``: the key cannot cover the node's reservation; nothing was
  charged, another provider may serve.
* ``reset``    — the connection broke before a complete answer: retryable.
* ``timeout``  — a read timeout after the request was sent: the provider may still bill it,
  so it is retried only with ``retry_on_timeout``.
* ``invalid``  — a 2xx answer that is not a JSON completion: the provider has probably billed
  it, so it is not retried.
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from arbstr import __version__
from arbstr.config import Provider
from arbstr.routing.retry import Failure, FailureKind
from arbstr.upstream.protocol import ConnectFailed, HttpResponse, HttpTransport, Target
from arbstr.upstream.retry_after import parse_retry_after
from arbstr.upstream.transport import (
    DEFAULT_KEEPALIVE_EXPIRY_S,
    DEFAULT_MAX_CONNECTIONS,
    Transport,
)
from arbstr.upstream.usage import NotACompletion, Usage, completion_usage
from arbstr.urls import parse_http_url

if TYPE_CHECKING:
    import aiohttp

CHAT_PATH = "/chat/completions"
# reads a 2xx JSON answer's usage: (body, provider, request_id); raises NotACompletion
UsageReader = Callable[[bytes, str, str], Usage | None]


@dataclass(slots=True)
class AttemptFailed(Exception):
    kind: FailureKind
    message: str
    status: int | None = None
    body: bytes | None = None
    content_type: str | None = None
    retry_after_s: float | None = None

    @property
    def passes_through(self) -> bool:
        """An upstream 4xx (other than 429): the request's fault, returned to the client as is."""
        return self.failure.passes_through

    @property
    def possibly_billed(self) -> bool:
        return self.failure.possibly_billed

    @property
    def failure(self) -> Failure:
        """The retry policy's view of this failed attempt."""
        return Failure(self.kind, self.status, self.retry_after_s, self.message)

    def __str__(self) -> str:
        return self.message


@dataclass(slots=True)
class JsonReply:
    status: int
    body: bytes
    content_type: str
    routstr_cost_msats: str | None  # X-Routstr-Cost-Msats, if sent
    usage: Usage | None


@dataclass(slots=True)
class StreamReply:
    response: HttpResponse
    first_chunk: bytes
    routstr_cost_msats: str | None

    def next_chunk(self) -> Awaitable[bytes | None]:
        """The next body bytes; None at the end. ``TimeoutError`` when the stream goes quiet
        for ``stream_idle_timeout_s``, ``OSError`` when it breaks. (Not a coroutine itself:
        the response's awaitable is returned as is, one frame less per chunk.)"""
        return self.response.next_chunk()

    def pump(self, sink: Callable[[bytes], bool]) -> Awaitable[bool]:
        """The next body bytes to ``sink`` as they arrive, until it returns True (then True)
        or the body ends (False); failures raise as from :meth:`next_chunk`."""
        return self.response.pump(sink)

    def close(self) -> None:
        self.response.close()


class UpstreamClient:
    """Chat requests go through ``transport`` (default: the lean keep-alive
    :class:`~arbstr.upstream.transport.Transport`, built from the pool settings and
    ``ssl_context``); one shared aiohttp session serves the low-traffic calls (prices,
    balances)."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        stream_idle_timeout_s: float,
        max_connections_per_provider: int = DEFAULT_MAX_CONNECTIONS,
        keepalive_expiry_s: float = DEFAULT_KEEPALIVE_EXPIRY_S,
        ssl_context: ssl.SSLContext | None = None,
        transport: HttpTransport | None = None,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.stream_idle_timeout_s = stream_idle_timeout_s
        self._limit_per_host = max_connections_per_provider
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        if transport is None:
            transport = Transport(
                max_connections_per_origin=max_connections_per_provider,
                keepalive_expiry_s=keepalive_expiry_s,
                ssl_context=ssl_context,
            )
        self._transport = transport
        self._targets: dict[tuple[str, str | None, str], Target] = {}

    async def get_session(self) -> aiohttp.ClientSession:
        """The shared aiohttp session, made on first use: a proxy with no price discovery that is
        never asked for balances does not load aiohttp at all. The first import runs in a
        worker thread, so that the event loop keeps relaying meanwhile."""
        if self._session is None:
            await asyncio.to_thread(importlib.import_module, "aiohttp")
            if self._closed:
                raise RuntimeError("UpstreamClient is closed")
            if self._session is None:  # another caller may have made it meanwhile
                self._session = _new_session(
                    self.connect_timeout_s, self._limit_per_host, self._ssl_context
                )
        return self._session

    async def close(self) -> None:
        self._closed = True
        self._transport.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _target(self, provider: Provider, path: str) -> Target:
        key = (provider.url, provider.api_key, path)
        target = self._targets.get(key)
        if target is None:
            headers = {
                "User-Agent": f"arbstr/{__version__}",
                "Content-Type": "application/json",
                "Accept-Encoding": "identity",  # bodies are forwarded and read as they are
            }
            if provider.api_key:
                headers["Authorization"] = f"Bearer {provider.api_key}"
            url = parse_http_url(provider.url).join(path)
            target = Target.for_url(url, headers)
            self._targets[key] = target
        return target

    async def _post(
        self,
        provider: Provider,
        body: bytes,
        request_id: str,
        timeout_s: float,
        path: str,
        extra_head: bytes,
    ) -> HttpResponse:
        return await self._transport.post(
            self._target(provider, path),
            body,
            b"X-Request-Id: " + request_id.encode("latin-1") + b"\r\n" + extra_head,
            min(self.connect_timeout_s, timeout_s),
            timeout_s,
        )

    async def complete(
        self,
        provider: Provider,
        body: bytes,
        request_id: str,
        timeout_s: float,
        path: str = CHAT_PATH,
        extra_head: bytes = b"",
        usage_of: UsageReader = completion_usage,
    ) -> JsonReply:
        """Send a non-streaming request to ``{url}{path}`` (``extra_head``: more header lines,
        each ending CRLF) and read the whole answer within ``timeout_s``; ``usage_of`` reads
        its usage (the API's ``reply_usage``)."""
        resp: HttpResponse | None = None
        try:
            resp = await self._post(provider, body, request_id, timeout_s, path, extra_head)
            data = await resp.read()
        except BaseException as exc:
            if resp is not None:
                resp.close()
            raise _classify(provider, exc) from exc
        status = resp.status
        headers = resp.headers
        ctype = headers.get("content-type", "application/json")
        if status >= 400:
            raise _status_failure(provider, status, data, ctype, headers)
        try:
            usage = usage_of(data, provider.name, request_id)
        except NotACompletion as exc:
            raise AttemptFailed(
                "invalid",
                f"{provider.name} answered HTTP {status} with a body that is {exc}",
                status=status,
            ) from None
        return JsonReply(status, data, ctype, headers.get("x-routstr-cost-msats"), usage)

    async def open_stream(
        self,
        provider: Provider,
        body: bytes,
        request_id: str,
        first_byte_timeout_s: float,
        path: str = CHAT_PATH,
        extra_head: bytes = b"",
    ) -> StreamReply:
        """Send a streaming request to ``{url}{path}`` and wait for the first body bytes
        (nothing sent to the client yet, so any failure up to here can still be retried).
        After that, the stream times out only when no data arrives for
        ``stream_idle_timeout_s``."""
        resp: HttpResponse | None = None
        try:
            resp = await self._post(
                provider, body, request_id, first_byte_timeout_s, path, extra_head
            )
            if resp.status >= 400:
                data = await resp.read()
                ctype = resp.headers.get("content-type", "application/json")
                raise _status_failure(provider, resp.status, data, ctype, resp.headers)
            first: bytes | None = b""
            while first == b"":
                first = await resp.next_chunk()
            if first is None:
                resp.close()
                raise AttemptFailed("reset", f"{provider.name}: stream ended before any data")
            resp.stream_timeouts(self.stream_idle_timeout_s)
            return StreamReply(resp, first, resp.headers.get("x-routstr-cost-msats"))
        except AttemptFailed:
            raise
        except BaseException as exc:
            if resp is not None:
                resp.close()
            raise _classify(provider, exc) from exc


def _new_session(
    connect_timeout_s: float, limit_per_host: int, ssl_context: ssl.SSLContext | None
) -> aiohttp.ClientSession:
    import aiohttp

    connector = aiohttp.TCPConnector(
        limit=0,
        limit_per_host=limit_per_host,
        keepalive_timeout=30,
        enable_cleanup_closed=False,
        ssl=ssl_context if ssl_context is not None else True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
        raise_for_status=False,
    )


def _status_failure(
    provider: Provider, status: int, body: bytes, ctype: str, headers: Mapping[str, str]
) -> AttemptFailed:
    snippet = body[:200].decode("utf-8", "replace").strip()
    return AttemptFailed(
        "funds" if is_funds_answer(status, body) else "status",
        f"{provider.name} answered HTTP {status}" + (f": {snippet}" if snippet else ""),
        status=status,
        body=body,
        content_type=ctype,
        retry_after_s=parse_retry_after(headers.get("retry-after")),
    )


def _classify(provider: Provider, exc: BaseException) -> BaseException:
    """Map a transport exception to an AttemptFailed; cancellation passes through."""
    if isinstance(exc, AttemptFailed | asyncio.CancelledError | KeyboardInterrupt | SystemExit):
        return exc
    name = provider.name
    if isinstance(exc, ConnectFailed):
        return AttemptFailed("connect", f"{name}: {exc}")
    if isinstance(exc, TimeoutError):
        return AttemptFailed("timeout", f"{name}: no complete response before the timeout")
    if isinstance(exc, OSError):
        return AttemptFailed("reset", f"{name}: connection broken: {exc or type(exc).__name__}")
    return exc


FUNDS_CODES = frozenset({"insufficient_balance", "balance_limit_exceeded"})
_any_json = msgspec.json.Decoder()


def is_funds_answer(status: int, body: bytes) -> bool:
    """A Routstr node's "the key's balance cannot cover this request": any 402, or a 4xx with
    ``insufficient_balance`` / ``balance_limit_exceeded`` as ``error.code``, ``error.type`` or
    ``detail.type`` (a 429 stays a rate limit, retried)."""
    if status == 402:
        return True
    if not 400 <= status < 500 or status == 429 or not any(c.encode() in body for c in FUNDS_CODES):
        return False
    try:
        doc = _any_json.decode(body)
    except msgspec.DecodeError:
        return False
    if not isinstance(doc, dict):
        return False
    for outer, inner in (("error", "code"), ("error", "type"), ("detail", "type")):
        part = doc.get(outer)
        if isinstance(part, dict) and part.get(inner) in FUNDS_CODES:
            return True
    return False
