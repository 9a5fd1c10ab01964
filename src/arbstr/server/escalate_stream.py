"""Escalation of streams (``escalate_streams = true``): a tiered stream below frontier is
buffered whole (nothing sent yet), judged as the JSON answer it amounts to, and either
re-asked one tier up like a JSON answer or replayed to the client through the usual relay,
byte for byte. The client's first byte waits for the whole upstream answer."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from arbstr.apinames import ApiName
from arbstr.config import Rule
from arbstr.routing import Candidate
from arbstr.routing.escalation import next_tier, signal
from arbstr.routing.stream_answer import JUDGED_STREAMS, stream_answer
from arbstr.server.buffering import buffer_stream
from arbstr.server.disconnect import DisconnectWatch
from arbstr.server.escalate import Escalations, _discard, escalated_header
from arbstr.server.exchange import Exchange
from arbstr.server.http import Message, Send
from arbstr.server.outcome import billed_estimate, failed
from arbstr.server.pipeline_streams import Prepared, rid
from arbstr.upstream.client import StreamReply

log = logging.getLogger("arbstr.pipeline")


class _Unwatched:
    """The watch of a replay nobody receives: stopping it leaves the real one watching."""

    gone = False

    def stop(self) -> None:
        pass


UNWATCHED = cast(DisconnectWatch, _Unwatched())


def with_header(send: Send, name: bytes, value: bytes) -> Send:
    """``send`` with one more header on the response start."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], (name, value)]}
        await send(message)

    return wrapped


class StreamEscalations(Escalations):
    async def _stream(
        self, prep: Prepared, ex: Exchange, send: Send, watch: DisconnectWatch
    ) -> None:
        delivered = await self._attempts(prep, ex, send, watch, True)
        if delivered is None:
            return
        cand, sr = delivered
        assert isinstance(sr, StreamReply)
        rule = self._stream_rule(ex)
        trail = [ex]
        while rule is not None and next_tier(ex.tier) is not None:
            api = self._judged_api(cand)
            if api is None:
                break
            try:
                buf = await buffer_stream(sr, api)
            except asyncio.CancelledError:
                sr.close()
                raise
            sr = buf
            body = stream_answer(api, buf.datas) if buf.complete else None
            reason = None if body is None else signal(api, body, prep.request)
            if reason is None:
                break
            routed = self._rerouted(prep, rule, ex.est_input_tokens, next_tier(ex.tier) or "")
            if routed is None:
                log.info("escalation (%s): no tier above %s fits", reason, ex.tier, extra=rid(ex))
                break
            r = routed[0]
            nxt, again = self._reask(prep, ex, routed, reason)
            trail.append(nxt)
            ex.note = f"escalated: {reason}"
            try:
                up = await self._attempts(again, nxt, _discard, watch, True)
            except asyncio.CancelledError:
                buf.close()
                if watch.gone and not nxt.recorded:
                    self._record(nxt, failed(499, "client disconnected", billed_estimate(nxt, r)))
                raise
            if up is None:  # its failure is recorded; the buffered answer is the client's
                break
            await self._relay(prep, ex, _discard, UNWATCHED, cand, buf)  # (its row)
            prep, ex = again, nxt
            cand, reply = up
            assert isinstance(reply, StreamReply)
            sr = reply
        if ex is not trail[0]:
            send = with_header(send, b"x-arbstr-escalated", escalated_header(trail, ex))
        try:
            await self._relay(prep, ex, send, watch, cand, sr)
        except asyncio.CancelledError:
            if ex is not trail[0] and watch.gone and not ex.recorded:
                self._record(
                    ex, failed(499, "client disconnected", billed_estimate(ex, prep.route))
                )
            raise

    def _stream_rule(self, ex: Exchange) -> Rule | None:
        """The rule whose ``escalate_streams`` buffers this stream (None: not buffered)."""
        if ex.tier is None or ex.tier == "frontier":
            return None
        rule = self.gw.config.policies.by_name.get(ex.policy or "default")
        if rule is None or not (rule.escalate and rule.escalate_streams):
            return None
        return rule

    def _judged_api(self, cand: Candidate) -> ApiName | None:
        """The API of the stream's events as they come from ``cand`` (None: not judged)."""
        source = self.fallback if self.translated(cand) and self.fallback is not None else self.api
        return source.name if source.name in JUDGED_STREAMS else None
