"""The official openai SDK against arbstr (with the built-in mock providers), sync and async."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from fake_upstream import FakeUpstream, Stream, chunk, sse
from harness import ProxyThread, make_config, provider

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello arbstr"}]


@pytest.fixture(scope="module")
def mock_proxy() -> Iterator[ProxyThread]:
    with ProxyThread(make_config({}), with_mocks=True) as proxy:
        yield proxy


@pytest.fixture
def client(mock_proxy: ProxyThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=mock_proxy.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_sync_completion_content_usage_and_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSG)
    completion = raw.parse()
    assert raw.headers["x-arbstr-provider"] == "mock-alpha"  # the cheaper mock
    assert raw.headers["x-arbstr-model"] == "gpt-4o"
    uuid.UUID(raw.headers["x-arbstr-request-id"])
    content = completion.choices[0].message.content
    assert content is not None and content.startswith("Hello from mock-alpha (gpt-4o)!")
    assert "hello arbstr" in content
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    # mock-alpha: 5 sats / 1k input, 15 sats / 1k output, no base fee
    expected = (usage.prompt_tokens * 5 + usage.completion_tokens * 15) / 1000
    assert raw.headers["x-arbstr-cost-sats"] == f"{expected:.3f}"


def test_sync_streaming_content_and_arbstr_trailer(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=MSG,
        stream=True,
    ) as resp:
        assert resp.headers["x-arbstr-streaming"] == "true"
        assert resp.headers["x-arbstr-provider"] == "mock-alpha"
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello from mock-alpha (gpt-4o-mini)!")
    trailer = chunks[-1]
    assert trailer.choices == []
    assert trailer.model_extra is not None
    info = trailer.model_extra["arbstr"]
    assert info["provider"] == "mock-alpha" and info["model"] == "gpt-4o-mini"
    assert info["output_tokens"] == sum(
        1 for c in chunks if c.choices and c.choices[0].delta.content
    )
    assert info["cost_sats"] > 0
    # usage was not asked for, so no usage chunk was forwarded
    assert all(c.usage is None for c in chunks)


def test_sync_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=MSG,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1
    assert usage_chunks[0].usage is not None and usage_chunks[0].usage.completion_tokens > 0


def test_sdk_sees_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="no-such-model", messages=MSG)
    assert exc.value.code == "no_provider"
    assert "no-such-model" in exc.value.message


async def test_async_client_streams(mock_proxy: ProxyThread) -> None:
    async with openai.AsyncOpenAI(base_url=mock_proxy.url + "/v1", api_key="x") as c:
        stream = await c.chat.completions.create(
            model="claude-3.5-sonnet",
            messages=MSG,
            stream=True,
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert "mock-alpha (claude-3.5-sonnet)" in text


async def test_sdk_raises_on_interrupted_stream(fake_upstream: FakeUpstream) -> None:
    with ProxyThread(make_config({"providers": [provider("alpha", fake_upstream.url)]})) as p:
        fake_upstream.push(Stream(events=[sse(chunk("partial ")), sse(chunk("answer"))]))
        async with openai.AsyncOpenAI(base_url=p.url + "/v1", api_key="x", max_retries=0) as c:
            stream = await c.chat.completions.create(
                model="gpt-4o",
                messages=MSG,
                stream=True,
            )
            got: list[str] = []

            async def consume() -> None:
                async for ch in stream:
                    if ch.choices:
                        got.append(ch.choices[0].delta.content or "")

            with pytest.raises(openai.APIError) as exc:
                await consume()
        assert "".join(got) == "partial answer"
        assert "without [DONE]" in str(exc.value)
