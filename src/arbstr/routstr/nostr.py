"""The small part of Nostr that arbstr needs: read signed events from relays.

- :class:`Event`: a NIP-01 event; :func:`event_id` is the sha256 of its canonical JSON
  ``[0, pubkey, created_at, kind, tags, content]``; :func:`verify_event` checks the id and the
  BIP-340 Schnorr signature (libsecp256k1 through ``coincurve``).
- :func:`query_relay`: one ``REQ`` over a websocket (aiohttp's client) until ``EOSE``; every
  failure (refused, DNS, TLS, timeout, ``CLOSED``) becomes the answer's ``error``, never an
  exception. Events with a bad id or signature, malformed events and events that do not match
  the filter are dropped and counted.
- :func:`query_relays`: the same against several relays at once, then :func:`latest_replaceable`
  keeps one event per replaceable address (NIP-01: kind 0, 3 and 10000-19999 by
  ``(kind, pubkey)``; 30000-39999 by ``(kind, pubkey, d)``), the newest ``created_at`` winning and,
  on a tie, the lowest id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from coincurve import PrivateKey, PublicKeyXOnly

__all__ = [
    "Event",
    "event_id",
    "latest_replaceable",
    "matches_filter",
    "public_key_hex",
    "query_relay",
    "query_relays",
    "serialize_event",
    "sign_event",
    "verify_event",
    "verify_schnorr",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
MAX_EVENTS_PER_RELAY = 5000
MAX_MESSAGE_BYTES = 1 << 20  # one relay message (one event); Routstr announcements are tiny
# How long to wait for the relay's reply to our close frame (aiohttp's default is 10 s);
# ClientWSTimeout is aiohttp >= 3.11, a float before.
_WS_CLOSE_TIMEOUT: Any = (
    aiohttp.ClientWSTimeout(ws_close=1.0) if hasattr(aiohttp, "ClientWSTimeout") else 1.0
)


@dataclass(frozen=True, slots=True)
class Event:
    """A NIP-01 event. Build it from relay JSON with :meth:`from_json` (validates the shape,
    not the signature: use :func:`verify_event`)."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: tuple[tuple[str, ...], ...]
    content: str
    sig: str

    @classmethod
    def from_json(cls, obj: object) -> Event:
        """Raises ``ValueError`` naming the first malformed field."""
        if not isinstance(obj, dict):
            raise ValueError("event is not a JSON object")
        for name, pattern in (("id", _HEX64), ("pubkey", _HEX64), ("sig", _HEX128)):
            value = obj.get(name)
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise ValueError(f"event.{name} is not lower-case hex of the right length")
        created_at, kind = obj.get("created_at"), obj.get("kind")
        if type(created_at) is not int or created_at < 0:
            raise ValueError("event.created_at is not a non-negative integer")
        if type(kind) is not int or not 0 <= kind <= 65535:
            raise ValueError("event.kind is not an integer in 0..65535")
        content = obj.get("content")
        if not isinstance(content, str):
            raise ValueError("event.content is not a string")
        raw_tags = obj.get("tags")
        if not isinstance(raw_tags, list) or not all(
            isinstance(t, list) and all(isinstance(s, str) for s in t) for t in raw_tags
        ):
            raise ValueError("event.tags is not a list of lists of strings")
        return cls(
            id=obj["id"],
            pubkey=obj["pubkey"],
            created_at=created_at,
            kind=kind,
            tags=tuple(tuple(t) for t in raw_tags),
            content=content,
            sig=obj["sig"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": [list(t) for t in self.tags],
            "content": self.content,
            "sig": self.sig,
        }

    def tag_values(self, name: str) -> list[str]:
        """The first value of every tag called ``name``, in order: ``[["u", "x"]]`` -> ``["x"]``."""
        return [t[1] for t in self.tags if len(t) >= 2 and t[0] == name]

    @property
    def d(self) -> str:
        """The ``d`` tag's value ("" when absent), the identifier of a parameterized replaceable
        event."""
        for t in self.tags:
            if t and t[0] == "d":
                return t[1] if len(t) > 1 else ""
        return ""

    @property
    def address(self) -> tuple[int, str, str] | str:
        """What replaces what: ``(kind, pubkey, d)`` for replaceable kinds, else the id."""
        k = self.kind
        if k in (0, 3) or 10000 <= k < 20000:
            return (k, self.pubkey, "")
        if 30000 <= k < 40000:
            return (k, self.pubkey, self.d)
        return self.id


# ---------------------------------------------------------------------------------------------
# Ids and signatures


def serialize_event(
    pubkey: str, created_at: int, kind: int, tags: Iterable[Sequence[str]], content: str
) -> bytes:
    """NIP-01's canonical form: UTF-8 JSON of ``[0,pubkey,created_at,kind,tags,content]`` with no
    white space and only ``"``, ``\\`` and control characters escaped (as ``JSON.stringify``).

    Raises ``UnicodeEncodeError`` for text holding lone surrogates (not valid UTF-8)."""
    data = [0, pubkey, created_at, kind, [list(t) for t in tags], content]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def event_id(
    pubkey: str, created_at: int, kind: int, tags: Iterable[Sequence[str]], content: str
) -> str:
    """The event id: hex sha256 of :func:`serialize_event`."""
    return hashlib.sha256(serialize_event(pubkey, created_at, kind, tags, content)).hexdigest()


def verify_schnorr(pubkey_hex: str, message: bytes, sig_hex: str) -> bool:
    """BIP-340: is ``sig_hex`` a valid signature of ``message`` by the x-only ``pubkey_hex``?"""
    try:
        return PublicKeyXOnly(bytes.fromhex(pubkey_hex)).verify(bytes.fromhex(sig_hex), message)
    except ValueError:  # bad hex, not a point on the curve, wrong signature length
        return False


def verify_event(event: Event) -> bool:
    """True when ``event.id`` is the hash of its content and ``event.sig`` signs that id."""
    try:
        computed = event_id(event.pubkey, event.created_at, event.kind, event.tags, event.content)
    except UnicodeEncodeError:
        return False
    return computed == event.id and verify_schnorr(event.pubkey, bytes.fromhex(computed), event.sig)


def public_key_hex(secret_key_hex: str) -> str:
    """The x-only public key (hex) of a 32-byte secret key (hex)."""
    return PublicKeyXOnly.from_secret(bytes.fromhex(secret_key_hex)).format().hex()


def sign_event(
    secret_key_hex: str,
    *,
    kind: int,
    tags: Iterable[Sequence[str]] = (),
    content: str = "",
    created_at: int | None = None,
) -> Event:
    """A new event signed with ``secret_key_hex`` (BIP-340, fresh auxiliary randomness)."""
    tag_tuple = tuple(tuple(t) for t in tags)
    pubkey = public_key_hex(secret_key_hex)
    ts = int(time.time()) if created_at is None else created_at
    eid = event_id(pubkey, ts, kind, tag_tuple, content)
    sig = PrivateKey(bytes.fromhex(secret_key_hex)).sign_schnorr(bytes.fromhex(eid))
    return Event(eid, pubkey, ts, kind, tag_tuple, content, sig.hex())


# ---------------------------------------------------------------------------------------------
# Filters and de-duplication


def matches_filter(event: Event, flt: Mapping[str, Any]) -> bool:
    """NIP-01 filter semantics for ``ids``, ``authors``, ``kinds``, ``since``, ``until`` and
    ``#x`` tag filters (other keys, e.g. ``limit``, do not restrict). A relay may send anything;
    what does not match what we asked for is dropped."""
    ids, authors, kinds = flt.get("ids"), flt.get("authors"), flt.get("kinds")
    if ids is not None and event.id not in ids:
        return False
    if authors is not None and event.pubkey not in authors:
        return False
    if kinds is not None and event.kind not in kinds:
        return False
    since, until = flt.get("since"), flt.get("until")
    if since is not None and event.created_at < since:
        return False
    if until is not None and event.created_at > until:
        return False
    for key, wanted in flt.items():
        if len(key) == 2 and key[0] == "#" and not set(event.tag_values(key[1])) & set(wanted):
            return False
    return True


def latest_replaceable(events: Iterable[Event]) -> list[Event]:
    """One event per id and per replaceable address, the newest ``created_at`` winning (the lowest
    id on a tie, as NIP-01 says); newest first."""
    best: dict[tuple[int, str, str] | str, Event] = {}
    for ev in events:
        key = ev.address
        cur = best.get(key)
        if cur is None or (ev.created_at, cur.id) > (cur.created_at, ev.id):
            best[key] = ev
    return sorted(best.values(), key=lambda e: (-e.created_at, e.id))


# ---------------------------------------------------------------------------------------------
# Talking to relays


@dataclass(slots=True)
class RelayAnswer:
    """What one relay said to one ``REQ``. ``error`` is None when it answered completely (EOSE)."""

    url: str
    events: list[Event] = field(default_factory=list)  # verified and matching, as received
    eose: bool = False
    connected: bool = False
    dropped: int = 0  # malformed, bad id/signature, or not matching the filter
    notices: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def answered(self) -> bool:
        """The relay was reached and said something useful: EOSE, or events before a timeout."""
        return self.connected and (self.eose or bool(self.events))


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Events from several relays, verified and de-duplicated (:func:`latest_replaceable`)."""

    events: list[Event]
    answers: list[RelayAnswer]

    @property
    def answered(self) -> list[str]:
        return [a.url for a in self.answers if a.answered]

    @property
    def errors(self) -> dict[str, str]:
        return {a.url: a.error for a in self.answers if a.error is not None}

    @property
    def dropped(self) -> int:
        return sum(a.dropped for a in self.answers)


def _printable(text: str, limit: int = 300) -> str:
    """Relay-supplied text for a terminal: no control characters, bounded."""
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text if len(text) <= limit else text[:limit] + "…"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"websocket handshake failed: HTTP {exc.status} {exc.message}".rstrip()
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_err = exc.os_error
        refused = isinstance(os_err, ConnectionRefusedError)
        return f"cannot connect: {'connection refused' if refused else os_err.strerror or os_err}"
    return _printable(str(exc) or type(exc).__name__)


async def query_relay(
    session: aiohttp.ClientSession,
    url: str,
    filters: Sequence[Mapping[str, Any]],
    *,
    timeout_s: float,
    verify: Callable[[Event], bool] = verify_event,
) -> RelayAnswer:
    """Send one ``REQ`` with ``filters`` to the relay at ``url`` (``ws://`` or ``wss://``) and
    collect events until ``EOSE`` or ``timeout_s`` seconds. Never raises for network or protocol
    trouble: it is in the answer's ``error``."""
    answer = RelayAnswer(url=url)
    if not url.startswith(("ws://", "wss://")):
        answer.error = "not a ws:// or wss:// URL"
        return answer
    sub_id = "arbstr-" + os.urandom(6).hex()
    try:
        async with asyncio.timeout(timeout_s):
            async with session.ws_connect(
                url,
                autoping=True,
                heartbeat=None,
                max_msg_size=MAX_MESSAGE_BYTES,
                timeout=_WS_CLOSE_TIMEOUT,
            ) as ws:
                answer.connected = True
                await ws.send_str(json.dumps(["REQ", sub_id, *filters]))
                await _collect(ws, sub_id, filters, verify, answer)
                if answer.eose:
                    await ws.send_str(json.dumps(["CLOSE", sub_id]))
    except TimeoutError:
        if answer.connected:
            answer.error = (
                f"no EOSE within {timeout_s:g} s (kept {len(answer.events)} event(s))"
                if not answer.eose
                else None  # closing politely took too long: we have the full answer
            )
        else:
            answer.error = f"no connection within {timeout_s:g} s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        if not answer.eose:
            answer.error = _describe(exc)
    return answer


async def _collect(
    ws: aiohttp.ClientWebSocketResponse,
    sub_id: str,
    filters: Sequence[Mapping[str, Any]],
    verify: Callable[[Event], bool],
    answer: RelayAnswer,
) -> None:
    async for msg in ws:
        if msg.type is not aiohttp.WSMsgType.TEXT:
            if msg.type is aiohttp.WSMsgType.ERROR:
                answer.error = f"websocket error: {_describe(ws.exception() or Exception())}"
                return
            continue  # binary frames are not Nostr
        try:
            frame = json.loads(msg.data)
        except ValueError:
            answer.notices.append("relay sent a non-JSON message")
            continue
        if not isinstance(frame, list) or not frame or not isinstance(frame[0], str):
            continue
        verb = frame[0]
        if verb == "EVENT" and len(frame) >= 3 and frame[1] == sub_id:
            try:
                ev = Event.from_json(frame[2])
            except ValueError:
                answer.dropped += 1
                continue
            if any(matches_filter(ev, f) for f in filters) and verify(ev):
                answer.events.append(ev)
                if len(answer.events) >= MAX_EVENTS_PER_RELAY:
                    answer.notices.append(f"stopped after {MAX_EVENTS_PER_RELAY} events")
                    answer.eose = True
                    return
            else:
                answer.dropped += 1
        elif verb == "EOSE" and len(frame) >= 2 and frame[1] == sub_id:
            answer.eose = True
            return
        elif verb == "CLOSED" and len(frame) >= 2 and frame[1] == sub_id:
            reason = frame[2] if len(frame) > 2 and isinstance(frame[2], str) else ""
            answer.error = f"relay closed the subscription: {_printable(reason) or '(no reason)'}"
            return
        elif verb == "NOTICE" and len(frame) >= 2 and isinstance(frame[1], str):
            answer.notices.append(_printable(frame[1]))
    if not answer.eose and answer.error is None:
        answer.error = "relay closed the connection before EOSE"


async def query_relays(
    relays: Sequence[str],
    filters: Sequence[Mapping[str, Any]],
    *,
    timeout_s: float,
    session: aiohttp.ClientSession | None = None,
) -> QueryResult:
    """:func:`query_relay` against every relay at once; verified events, de-duplicated."""
    urls = list(dict.fromkeys(r.strip() for r in relays if r.strip()))
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await query_relays(urls, filters, timeout_s=timeout_s, session=own)
    answers = await asyncio.gather(
        *(query_relay(session, u, filters, timeout_s=timeout_s) for u in urls)
    )
    events = latest_replaceable(ev for a in answers for ev in a.events)
    return QueryResult(events=events, answers=list(answers))
