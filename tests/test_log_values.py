"""Request log lines stay parseable as key=value whatever the client sent (logfmt quoting)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr.logs import logfmt_value, request_message
from arbstr.records import RequestRecord

BASE = RequestRecord(
    request_id="r",
    timestamp="2025-01-02T03:04:05.678Z",
    model="gpt-4o",
    provider="alpha",
    policy="default",
    streaming=False,
    input_tokens=1,
    output_tokens=2,
    cost_msats=None,
    provider_cost_msats=None,
    latency_ms=3,
    ttft_ms=None,
    stream_duration_ms=None,
    success=True,
    error_status=None,
    error_message=None,
)
# logfmt: key=bare or key="json string"
PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^ ]*)')


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("gpt-4o", "gpt-4o"),
        ("a provider=x", '"a provider=x"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("", '""'),
        ("tab\there", '"tab\\there"'),
        ("back\\slash", '"back\\\\slash"'),
    ],
)
def test_values_are_quoted_only_when_needed(value: str, shown: str) -> None:
    assert logfmt_value(value) == shown


def test_a_model_with_a_space_and_equals_stays_one_key() -> None:
    line = request_message(replace(BASE, model="a provider=x"))
    keys = dict(PAIR.findall(line))
    assert keys["model"] == '"a provider=x"'
    assert keys["provider"] == "alpha"


@given(model=st.text(min_size=1, max_size=40))
def test_any_model_yields_exactly_the_expected_keys(model: str) -> None:
    line = request_message(replace(BASE, model=model))
    keys = [k for k, _ in PAIR.findall(line.split(" ", 2)[2])]
    assert keys == [
        "model", "provider", "policy", "stream", "tokens", "cost_sats", "latency_ms",
        "attempts", "retries",
    ]  # fmt: skip
