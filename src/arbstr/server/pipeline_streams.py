"""The streaming half of the pipeline (:class:`~arbstr.server.pipeline.ApiHandler`): chat and
completions through the chat relay, every other stream (and a translated one) event by
event with the API's :class:`~arbstr.apis.base.StreamReader`; and the one row per answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from arbstr.apis.base import Api, ApiRequest, StreamReader, Translator
from arbstr.logs import log_request
from arbstr.routing import Candidate, Route
from arbstr.server.budgets import settle
from arbstr.server.charge import Charge
from arbstr.server.delivery import SSE_HEADERS
from arbstr.server.disconnect import DisconnectWatch
from arbstr.server.exchange import Exchange
from arbstr.server.http import Send
from arbstr.server.outcome import (
    Outcome,
    add_msats,
    billed_estimate,
    cache_write_tokens,
    cached_tokens,
    record_of,
    stream_cost,
    tokens,
)
from arbstr.server.streaming import relay_events
from arbstr.upstream import Usage, provider_cost_msats
from arbstr.upstream.client import StreamReply

if TYPE_CHECKING:
    from arbstr.redact import Redactor
    from arbstr.server.gateway import Gateway

log = logging.getLogger("arbstr.pipeline")


@dataclass(slots=True)
class Prepared:
    api: Api
    body: bytes  # what goes upstream (to candidates that list the route's model)
    request: ApiRequest
    route: Route
    original: bytes  # the client's body
    reserve: Callable[[Candidate], int | None]  # msats a candidate's node reserves for it
    extra_head: bytes = b""  # the client's headers the API forwards, as header lines

    def body_for(self, c: Candidate) -> bytes:
        """The body for ``c``: with the model as that provider lists it."""
        if c.model == self.route.model:
            return self.body
        return self.api.upstream_body(self.original, self.request, c.model)


@dataclass(slots=True)
class _Read:
    """What a finished stream told: usage, output events, its reported charge, an error."""

    usage: Usage | None
    content: int
    upstream_error: str | None
    reported: int | None
    # the usage is the whole answer's: chat sends it once, complete; an event stream
    # (Anthropic's message_start, then message_delta) only once it ended normally
    usage_final: bool = True


class StreamsMixin:
    gw: Gateway
    api: Api
    redact: Redactor
    translator: Translator | None
    fallback: Api | None
    openai_relay: bool
    trailer: bool

    if TYPE_CHECKING:

        async def _attempts(
            self, prep: Prepared, ex: Exchange, send: Send, watch: DisconnectWatch, stream: bool
        ) -> tuple[Candidate, object] | None: ...

        def translated(self, c: Candidate) -> bool: ...

        async def _stream_openai(
            self,
            prep: Prepared,
            ex: Exchange,
            send: Send,
            watch: DisconnectWatch,
            cand: Candidate,
            sr: StreamReply,
        ) -> None: ...

    async def _relay(
        self,
        prep: Prepared,
        ex: Exchange,
        send: Send,
        watch: DisconnectWatch,
        cand: Candidate,
        sr: StreamReply,
    ) -> None:
        """The stream from ``cand`` to the client, and its row."""
        if self.openai_relay and not self.translated(cand):
            await self._stream_openai(prep, ex, send, watch, cand, sr)  # (HotPaths)
        else:
            await self._stream_events(prep, ex, send, watch, cand, sr)

    async def _stream_events(
        self,
        prep: Prepared,
        ex: Exchange,
        send: Send,
        watch: DisconnectWatch,
        cand: Candidate,
        sr: StreamReply,
    ) -> None:
        """Any other stream: the upstream's events forwarded as they came (or translated,
        for a provider serving the API through another), read by the API's StreamReader."""
        translated = self.translated(cand)
        source = self.fallback if translated and self.fallback is not None else self.api
        reader: StreamReader = source.stream_reader(cand.provider.name, ex.request_id)
        first_byte_at = time.perf_counter()
        try:
            error_message = await relay_events(
                sr,
                reader,
                send,
                ex.headers() + SSE_HEADERS,
                provider=cand.provider.name,
                idle_timeout_s=self.gw.config.server.stream_idle_timeout_s,
                redact=self.redact.bytes,
                before_last_send=watch.stop,
                stream_error=self.api.stream_error,
                translator=self.translator.stream_translator(cand.model)
                if translated and self.translator is not None
                else None,
            )
        except asyncio.CancelledError:
            ex.relayed_output_tokens = tokens(reader.usage, 0, reader.content_events)[1]
            raise
        finally:
            sr.close()
        reported = provider_cost_msats(
            reader.usage,
            sr.routstr_cost_msats,
            provider=cand.provider.name,
            request_id=ex.request_id,
        )
        read = _Read(
            reader.usage, reader.content_events, reader.upstream_error, reported, reader.done
        )
        self._stream_end(prep, ex, cand, first_byte_at, error_message, read, [])

    def _stream_end(
        self,
        prep: Prepared,
        ex: Exchange,
        cand: Candidate,
        first_byte_at: float,
        error_message: str | None,
        read: _Read,
        told: list[Charge],
    ) -> None:
        """A relayed stream's outcome: breaker, learned ratio, cost, its row."""
        gw = self.gw
        ex.attempts.in_flight = False  # (still set if the client left: the node bills a cut stream)
        now = time.perf_counter()
        usage = read.usage
        in_tok, out_tok = tokens(usage, ex.est_input_tokens, read.content)
        if read.upstream_error is not None:
            upstream_says = self.redact.text(read.upstream_error)
            error_message = f"{cand.provider.name}: error event: {upstream_says}"
        success = error_message is None
        if not success:
            log.warning("stream failed: %s", error_message, extra=rid(ex))
            gw.health.record_failure(cand.provider.name)
        elif usage is not None and usage.prompt_tokens and prep.request.estimate_output:
            gw.ratios.observe(ex.policy or "default", ex.model, in_tok, out_tok)
        charge, billed = stream_cost(
            told[0] if told else None,
            usage is not None and read.usage_final,
            read.reported,
            cand.rates,
            (in_tok, out_tok),
            ex.est_output_tokens,
            cached_tokens(usage),
            cache_write_tokens(usage),
        )
        self._record(
            ex,
            Outcome(
                success,
                input_tokens=in_tok,
                output_tokens=out_tok,
                charge=charge,
                possibly_billed_msats=add_msats(billed, billed_estimate(ex, prep.route)),
                ttft_ms=(first_byte_at - ex.started) * 1000.0,
                stream_duration_ms=(now - first_byte_at) * 1000.0,
                error_status=None if success else 502,
                error_message=error_message,
            ),
        )

    def _record(self, ex: Exchange, o: Outcome) -> None:
        ex.recorded = True
        if ex.note is not None and o.success and o.error_message is None:
            o.error_message = ex.note  # (an answer re-asked a tier up)
        c = ex.candidate
        if o.success and ex.sticky_key is not None and c is not None:
            self.gw.sticky.remember(ex.sticky_key, c.provider.name, c.model, ex.tier)
        record = record_of(ex, o, self.redact)
        if ex.budget_hold is not None:
            settle(self.gw.budgets, ex, record, self.gw.shared_budgets)
        self.gw.sink.submit(record)
        metrics = self.gw.metrics
        if metrics is not None:
            metrics.observe(record, ex.attempts.failures, ex.attempts.tried)
        log_request(record, ex.attempts.header())


def rid(ex: Exchange) -> dict[str, str]:
    return {"request_id": ex.request_id}
