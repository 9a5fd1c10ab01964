"""The hot path of the pipeline (:class:`~arbstr.server.pipeline.ApiHandler`): JSON answers
of every API, and the OpenAI chunk streams of chat (arbstr's trailer before ``[DONE]``) and
legacy completions (no trailer) through the chat relay."""

from __future__ import annotations

import asyncio
import time

from arbstr.routing import Candidate, cost_msats
from arbstr.server.charge import Charge
from arbstr.server.delivery import SSE_HEADERS, trailer_event
from arbstr.server.disconnect import DisconnectWatch
from arbstr.server.escalate import Answer, escalated_header
from arbstr.server.escalate_stream import StreamEscalations
from arbstr.server.exchange import Exchange
from arbstr.server.http import Send, send_bytes
from arbstr.server.outcome import (
    Outcome,
    billed_estimate,
    cache_write_tokens,
    cached_tokens,
    tokens,
)
from arbstr.server.pipeline_streams import Prepared, _Read
from arbstr.server.streaming import relay_stream
from arbstr.upstream import StreamRelay, provider_cost_msats
from arbstr.upstream.client import JsonReply, StreamReply


class HotPaths(StreamEscalations):
    # -- non-streaming ------------------------------------------------------------------------

    async def _complete(
        self, prep: Prepared, ex: Exchange, send: Send, watch: DisconnectWatch
    ) -> None:
        delivered = await self._attempts(prep, ex, send, watch, False)
        if delivered is None:
            return
        cand, reply = delivered
        assert isinstance(reply, JsonReply)
        answer = self._answer(ex, cand, reply)
        trail = [ex]  # with escalation: every exchange, the re-asks after the first
        if ex.tier is not None and ex.tier != "frontier":  # (escalation: tiered answers only)
            rule = self.gw.config.policies.by_name.get(ex.policy or "default")
            if rule is not None and rule.escalate:
                prep, ex, answer = await self._escalated(prep, answer, watch, trail, rule)
        latency = (time.perf_counter() - trail[0].started) * 1000.0
        waited = sum(e.attempts.waited_s for e in trail) if len(trail) > 1 else ex.attempts.waited_s
        overhead = max(0.0, latency - waited * 1000.0)
        headers = ex.headers()
        headers.append((b"content-type", answer.ctype.encode("latin-1")))
        headers += answer.charge.headers()
        headers.append((b"x-arbstr-latency-ms", f"{latency:.2f}".encode()))
        headers.append((b"x-arbstr-overhead-ms", f"{overhead:.2f}".encode()))
        if ex is not trail[0]:  # (a failed re-ask left the first answer: no header)
            headers.append((b"x-arbstr-escalated", escalated_header(trail, ex)))
        watch.stop()
        await send_bytes(send, answer.reply.status, self.redact.bytes(answer.body), headers)
        if not ex.recorded:  # (recorded already: an answer whose re-ask failed)
            self._answered(prep, ex, answer)

    def _answer(self, ex: Exchange, cand: Candidate, reply: JsonReply) -> Answer:
        """A JSON answer's cost and the body the client gets."""
        ex.attempts.in_flight = False
        in_tok, out_tok = tokens(reply.usage, ex.est_input_tokens, None)
        usage = reply.usage
        charge = Charge(
            cost_msats(
                cand.rates, in_tok, out_tok, cached_tokens(usage), cache_write_tokens(usage)
            ),
            provider_cost_msats(
                usage,
                reply.routstr_cost_msats,
                provider=cand.provider.name,
                request_id=ex.request_id,
            ),
        )
        body, ctype = reply.body, reply.content_type
        if self.translator is not None and self.translated(cand):
            body = self.translator.translate_reply(body, cand.model)
            ctype = "application/json"
        return Answer(cand, reply, charge, body, ctype, in_tok, out_tok)

    def _answered(
        self, prep: Prepared, ex: Exchange, a: Answer, message: str | None = None
    ) -> None:
        """A JSON answer's row (``message``: why it was not the one the client got)."""
        usage = a.reply.usage
        if (
            usage is not None
            and usage.prompt_tokens
            and usage.completion_tokens is not None
            and prep.request.estimate_output
        ):
            self.gw.ratios.observe(ex.policy or "default", ex.model, a.in_tok, a.out_tok)
        self._record(
            ex,
            Outcome(
                True,
                input_tokens=a.in_tok,
                output_tokens=a.out_tok,
                charge=a.charge,
                possibly_billed_msats=billed_estimate(ex, prep.route),  # earlier attempts
                error_message=message,
            ),
        )

    async def _stream_openai(
        self,
        prep: Prepared,
        ex: Exchange,
        send: Send,
        watch: DisconnectWatch,
        cand: Candidate,
        sr: StreamReply,
    ) -> None:
        """Chat (with arbstr's trailer before ``[DONE]``) and legacy completions (without)."""
        gw = self.gw
        told: list[Charge] = []  # the charge at [DONE] (the trailer told the client)
        first_byte_at = time.perf_counter()  # the response starts now
        with_trailer = self.trailer

        def reported(relay: StreamRelay) -> int | None:
            return provider_cost_msats(
                relay.usage,
                sr.routstr_cost_msats,
                provider=cand.provider.name,
                request_id=ex.request_id,
            )

        def trailer(relay: StreamRelay) -> bytes:
            # built at [DONE], after the final usage chunk with the provider's figure
            in_tok, out_tok = tokens(relay.usage, ex.est_input_tokens, relay.content_chunks)
            cached = cached_tokens(relay.usage)
            told.append(Charge(cost_msats(cand.rates, in_tok, out_tok, cached), reported(relay)))
            if not with_trailer:
                return b""
            now = time.perf_counter()
            return trailer_event(
                chunk_id=relay.last_id or f"arbstr-{ex.request_id}",
                request_id=ex.request_id,
                provider=ex.provider,
                model=ex.model,
                policy=ex.policy,
                tokens=(in_tok, out_tok),
                cost=told[0].trailer_fields(),
                latency_ms=(now - ex.started) * 1000.0,
                ttft_ms=(first_byte_at - ex.started) * 1000.0,
            )

        relay = StreamRelay(
            forward_usage_chunk=prep.request.client_wants_usage,
            trailer=trailer,
            provider=cand.provider.name,
            request_id=ex.request_id,
        )
        try:
            error_message = await relay_stream(
                sr,
                relay,
                send,
                ex.headers() + SSE_HEADERS,
                provider=cand.provider.name,
                idle_timeout_s=gw.config.server.stream_idle_timeout_s,
                redact=self.redact.bytes,
                before_last_send=watch.stop,
            )
        except asyncio.CancelledError:  # the client left: the node still bills it all
            ex.relayed_output_tokens = tokens(relay.usage, 0, relay.content_chunks)[1]
            raise
        finally:
            sr.close()
        read = _Read(
            relay.usage,
            relay.content_chunks,
            relay.upstream_error,
            reported(relay) if not told else None,
        )
        self._stream_end(prep, ex, cand, first_byte_at, error_message, read, told)
