"""``auto`` picks its tier from the request's complexity score, through the real proxy and the
openai SDK against the built-in mocks (economy gpt-4o-mini, standard gpt-4o, frontier
claude-3.5-sonnet)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from arbstr.config import Config
from harness import ProxyThread, make_config

CODE_REVIEW = (
    "Review this change for bugs and explain the trade-offs step by step:\n"
    + "```python\n"
    + "def f(x):\n    return x * 2\n" * 400
    + "```\n"
    + "It touches src/arbstr/server/pipeline.py and tests/test_tiers.py."
)


@pytest.fixture
def proxy() -> Iterator[ProxyThread]:
    with ProxyThread(make_config({}), with_mocks=True) as p:
        yield p


def client(p: ProxyThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{p.url}/v1", api_key="x", max_retries=0)


def ask(
    p: ProxyThread,
    text: str,
    model: str = "auto",
    tools: Any = openai.omit,
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    raw = client(p).chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        tools=tools,
        extra_headers=headers,
    )
    return dict(raw.headers)


def test_a_simple_request_goes_to_the_economy_tier(proxy: ProxyThread) -> None:
    h = ask(proxy, "say hi")
    assert h["x-arbstr-tier"] == "economy"
    assert h["x-arbstr-model"] == "gpt-4o-mini"
    assert h["x-arbstr-complexity"].startswith("0.")
    [row] = proxy.records
    assert row.tier == "economy" and row.complexity is not None and row.complexity < 0.35


def test_a_hard_request_goes_to_the_frontier_tier(proxy: ProxyThread) -> None:
    tools = [
        {"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}}
        for i in range(12)
    ]
    h = ask(proxy, CODE_REVIEW, tools=tools)
    assert h["x-arbstr-tier"] == "frontier", h["x-arbstr-complexity"]
    assert h["x-arbstr-model"] == "claude-3.5-sonnet"
    assert "reasoning" in h["x-arbstr-complexity"]  # its main reasons are named


def test_the_tier_header_overrides_the_score(proxy: ProxyThread) -> None:
    h = ask(proxy, "say hi", headers={"X-Arbstr-Tier": "frontier"})
    assert h["x-arbstr-tier"] == "frontier" and h["x-arbstr-model"] == "claude-3.5-sonnet"


def test_a_concrete_model_is_not_scored_nor_replaced(proxy: ProxyThread) -> None:
    h = ask(proxy, CODE_REVIEW, model="gpt-4o-mini")
    assert h["x-arbstr-model"] == "gpt-4o-mini"
    assert "x-arbstr-complexity" not in h and "x-arbstr-tier" not in h


def test_a_policy_with_allowed_models_and_no_tiers_keeps_the_cheapest_allowed(
    proxies: list[ProxyThread],
) -> None:
    """Without [[tiers]], ``auto`` under a rule naming its models stays as it always was."""

    async def config() -> Config:
        from arbstr.mock import mock_config_data, start_mock_providers

        mocks = await start_mock_providers()
        data = mock_config_data(mocks)
        del data["tiers"]
        return make_config(data)

    p = ProxyThread(config).start()
    proxies.append(p)
    h = ask(p, "implement this function in code")  # the code_generation rule
    assert h["x-arbstr-policy"] == "code_generation"
    assert h["x-arbstr-model"] in ("gpt-4o", "claude-3.5-sonnet")
    assert "x-arbstr-tier" not in h
    assert h["x-arbstr-complexity"]  # scored all the same, for the log
