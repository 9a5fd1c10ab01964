"""``UpstreamClient`` and ``run_with_retries`` over the in-memory transport: what each
scripted upstream behaviour becomes (retried, passed through, not retried), without sockets."""

from __future__ import annotations

import random
import time

import msgspec
import pytest

from arbstr.config import Provider, RetrySettings
from arbstr.errors import UpstreamError
from arbstr.routing.health import HealthBoard
from arbstr.routing.router import Candidate
from arbstr.upstream.client import AttemptFailed, JsonReply, StreamReply, UpstreamClient
from arbstr.upstream.executor import AttemptLog, run_with_retries
from arbstr.upstream.protocol import ConnectFailed, ResponseBroken
from fake_upstream import DONE, completion_json, sse
from harness import make_config, provider
from memory_transport import Answer, Fail, MemoryTransport, json_answer

BODY = msgspec.json.encode({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
ERROR = {"error": {"message": "busy", "type": "server_error"}}
EVENTS = [sse({"id": "1", "choices": [{"delta": {"content": "a"}}]}), DONE]


def providers() -> list[Provider]:
    cfg = make_config(
        {
            "providers": [
                provider("alpha", "http://alpha.test/v1"),
                provider("beta", "https://beta.test:8443/v1", output_rate=40),
            ]
        }
    )
    return list(cfg.providers)


def candidates() -> list[Candidate]:
    return [Candidate(p, "gpt-4o", p.rates, 0.0, None) for p in providers()]


def client(t: MemoryTransport) -> UpstreamClient:
    return UpstreamClient(connect_timeout_s=2, stream_idle_timeout_s=7, transport=t)


async def run(
    t: MemoryTransport,
    *,
    stream: bool = False,
    max_attempts_per_provider: int = 3,
    retry_on_timeout: bool = False,
) -> tuple[Candidate, object, AttemptLog]:
    c = client(t)

    async def attempt(cand: Candidate, remaining: float) -> JsonReply | StreamReply:
        if stream:
            return await c.open_stream(cand.provider, BODY, "req-1", min(5.0, remaining))
        return await c.complete(cand.provider, BODY, "req-1", min(5.0, remaining))

    cands = candidates()
    log = AttemptLog()
    settings = RetrySettings(
        max_attempts_per_provider=max_attempts_per_provider,
        retry_on_timeout=retry_on_timeout,
        backoff_base_ms=0,
        backoff_max_ms=0,
    )
    cand, result = await run_with_retries(
        cands,
        attempt,
        settings=settings,
        health=HealthBoard(p.provider.name for p in cands),
        deadline=time.monotonic() + 30,
        log=log,
        rng=random.Random(1),
    )
    return cand, result, log


# --- what is sent ----------------------------------------------------------------------------


async def test_the_request_goes_to_the_providers_target_with_its_head() -> None:
    t = MemoryTransport(json_answer(completion_json("hi")))
    reply = await client(t).complete(providers()[1], BODY, "req-9", 5)
    assert reply.status == 200 and reply.usage is not None
    (sent,) = t.sent
    assert (sent.target.scheme, sent.target.host, sent.target.port) == ("https", "beta.test", 8443)
    assert sent.target.path == b"/v1/chat/completions"
    assert b"Host: beta.test:8443\r\n" in sent.target.head_prefix
    assert b"Authorization: Bearer sk-test-beta-0123456789\r\n" in sent.target.head_prefix
    assert sent.extra_head == b"X-Request-Id: req-9\r\n"
    assert sent.body == BODY
    assert (sent.connect_timeout_s, sent.timeout_s) == (2, 5)  # connect capped by the client's
    assert t.responses[0].closed


async def test_closing_the_client_closes_its_transport() -> None:
    t = MemoryTransport()
    await client(t).close()
    assert t.closed


# --- retries over the seam -----------------------------------------------------------------


async def test_a_503_is_retried_then_succeeds() -> None:
    t = MemoryTransport(json_answer(ERROR, 503), json_answer(completion_json("second")))
    cand, reply, log = await run(t)
    assert isinstance(reply, JsonReply) and b"second" in reply.body
    assert cand.provider.name == "alpha"
    assert log.header() == "1/alpha"
    assert [s.target.host for s in t.sent] == ["alpha.test", "alpha.test"]
    assert all(r.closed for r in t.responses)


@pytest.mark.parametrize(
    "broken",
    [
        Fail(ResponseBroken("upstream closed the connection before any response")),
        Answer(200, {"content-type": "application/json"}, [b'{"id":', ResponseBroken("cut")]),
    ],
    ids=["before-the-head", "mid-body"],
)
async def test_a_reset_before_a_complete_answer_is_retried(broken: Answer | Fail) -> None:
    t = MemoryTransport(broken, json_answer(completion_json()))
    _, reply, log = await run(t)
    assert isinstance(reply, JsonReply) and reply.status == 200
    assert log.header() == "1/alpha"
    assert log.possibly_billed is False


async def test_a_connect_failure_falls_back_to_the_next_provider() -> None:
    t = MemoryTransport(Fail(ConnectFailed("refused")), json_answer(completion_json()))
    cand, _, log = await run(t, max_attempts_per_provider=1)
    assert cand.provider.name == "beta"
    assert [s.target.host for s in t.sent] == ["alpha.test", "beta.test"]
    assert log.header() == "1/alpha"


async def test_a_timeout_is_not_retried_by_default() -> None:
    t = MemoryTransport(Fail(TimeoutError()), json_answer(completion_json()))
    with pytest.raises(UpstreamError) as info:
        await run(t)
    assert info.value.status == 504
    assert len(t.sent) == 1
    t2 = MemoryTransport(Fail(TimeoutError()), json_answer(completion_json()))
    _, _, log = await run(t2, retry_on_timeout=True)
    assert len(t2.sent) == 2 and log.possibly_billed


async def test_an_upstream_4xx_is_passed_through_unretried() -> None:
    t = MemoryTransport(json_answer({"error": {"message": "bad"}}, 400), json_answer({}))
    with pytest.raises(AttemptFailed) as info:
        await run(t)
    assert (info.value.status, info.value.passes_through) == (400, True)
    assert info.value.body == b'{"error":{"message":"bad"}}'
    assert len(t.sent) == 1


async def test_a_2xx_that_is_not_a_completion_is_not_retried() -> None:
    t = MemoryTransport(Answer(200, {}, [b"<html>"]), json_answer(completion_json()))
    with pytest.raises(UpstreamError):
        await run(t)
    assert len(t.sent) == 1


# --- streams -------------------------------------------------------------------------------


async def test_a_stream_returns_its_first_data_and_switches_to_idle_timeouts() -> None:
    t = MemoryTransport(
        json_answer(ERROR, 503),
        Answer(200, {"content-type": "text/event-stream"}, [b"", *EVENTS]),
    )
    _, reply, log = await run(t, stream=True)
    assert isinstance(reply, StreamReply)
    assert reply.first_chunk == EVENTS[0]  # empty reads are skipped
    response = t.responses[-1]
    assert response.idle_timeout_s == 7  # stream_idle_timeout_s, after the first bytes
    assert await reply.next_chunk() == DONE
    assert await reply.next_chunk() is None
    reply.close()
    assert response.closed
    assert log.header() == "1/alpha"


async def test_a_stream_that_ends_or_breaks_before_any_data_is_retried() -> None:
    t = MemoryTransport(
        Answer(200, {}, []),
        Answer(200, {}, [ResponseBroken("cut")]),
        Answer(200, {}, EVENTS),
    )
    _, reply, log = await run(t, stream=True, max_attempts_per_provider=3)
    assert isinstance(reply, StreamReply) and reply.first_chunk == EVENTS[0]
    assert log.header() == "2/alpha"
    assert all(r.closed for r in t.responses[:2])


# --- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "kind"),
    [
        (Fail(ConnectFailed("refused")), "connect"),
        (Fail(ResponseBroken("closed")), "reset"),
        (Fail(ConnectionResetError(104, "reset by peer")), "reset"),
        (Fail(TimeoutError()), "timeout"),
        (Answer(200, {}, [b'{"id":"x",', TimeoutError()]), "timeout"),
        (json_answer(ERROR, 502), "status"),
        (json_answer(ERROR, 429, retry_after="2"), "status"),
        (Answer(200, {}, [b"not json"]), "invalid"),
    ],
)
async def test_failure_classification(step: Answer | Fail, kind: str) -> None:
    t = MemoryTransport(step)
    with pytest.raises(AttemptFailed) as info:
        await client(t).complete(providers()[0], BODY, "r", 5)
    assert info.value.kind == kind
    assert all(r.closed for r in t.responses)
    if isinstance(step, Answer) and "retry-after" in step.headers:
        assert info.value.retry_after_s == 2.0
