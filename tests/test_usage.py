"""Reading ``usage`` and the provider's reported cost (arbstr.upstream.usage): exact, total,
lenient field by field."""

from __future__ import annotations

import logging
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbstr.money import MAX_MSATS
from arbstr.records import MAX_TOKENS
from arbstr.upstream.usage import (
    NotACompletion,
    Usage,
    completion_usage,
    provider_cost_msats,
    read_usage,
)


def usage_of(usage_json: bytes) -> Usage | None:
    return completion_usage(b'{"id":"x","usage":' + usage_json + b',"choices":[]}', provider="p")


def cost_of(usage_json: bytes, header: str | None = None) -> int | None:
    return provider_cost_msats(usage_of(usage_json), header, provider="p")


# --- valid amounts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "msats"),
    [
        (b'{"cost":{"total_msats":1234}}', 1234),
        (b'{"cost":{"total_msats":1234.0}}', 1234),
        (b'{"cost":{"total_msats":"1234"}}', 1234),
        (b'{"cost":{"total_msats":"1234.5"}}', 1235),  # half-up
        (b'{"cost":{"total_msats":1234.5}}', 1235),
        (b'{"cost":{"total_msats":1234.4999}}', 1234),
        (b'{"cost":{"total_msats":0.5}}', 1),
        (b'{"cost":{"total_msats":0}}', 0),
        (b'{"cost":{"total_msats":1000000000000}}', MAX_MSATS),
        (b'{"cost_sats":1.2345}', 1234),  # floored
        (b'{"cost_sats":1.75}', 1750),
        (b'{"cost_sats":0.001}', 1),
        (b'{"cost_sats":2}', 2000),
        (b'{"cost_sats":1000000000}', MAX_MSATS),
        (b'{"cost":2.5}', 2500),  # bare usage.cost is sats
        (b'{"cost":3}', 3000),
        (b'{"cost":{"base_msats":5}}', None),
        (b"{}", None),
        (b"null", None),
    ],
)
def test_amounts(usage: bytes, msats: int | None) -> None:
    got = cost_of(usage)
    assert got == msats and (got is None or type(got) is int)


@pytest.mark.parametrize(
    ("header", "msats"),
    [("1234", 1234), (" 1234 ", 1234), ("1234.5", 1235), ("0", 0), ("", None), (None, None)],
)
def test_header_amounts(header: str | None, msats: int | None) -> None:
    assert provider_cost_msats(None, header) == msats


def test_precedence() -> None:
    all_three = b'{"cost_sats":3,"cost":{"total_msats":1000}}'
    assert cost_of(all_three, "2000") == 1000
    assert cost_of(b'{"cost_sats":3}', "2000") == 2000
    assert cost_of(b'{"cost_sats":3}') == 3000
    assert cost_of(b'{"cost_sats":3}', "NaN") == 3000  # a bad header falls through
    assert cost_of(b'{"cost_sats":3,"cost":4}') == 3000
    assert cost_of(b'{"cost_sats":"x","cost":4}') == 4000
    assert cost_of(b'{"cost":{"total_msats":-1}}', "2000") == 2000  # a bad field falls through


# --- hostile values -------------------------------------------------------------------------

HOSTILE_JSON = [
    b"1e30",
    b"1e400",
    b"-1e400",
    b"-1",
    b"-0.5",
    b"1000000000001",
    b"1e13",
    b"123456789012345678901234567890",
    b"true",
    b"false",
    b'"abc"',
    b'"NaN"',
    b'"-5"',
    b'"1e3"',
    b"[]",
    b"{}",
    b"[1]",
]
FIELDS = {
    "usage.cost.total_msats": lambda v: b'{"cost":{"total_msats":' + v + b"}}",
    "usage.cost_sats": lambda v: b'{"cost_sats":' + v + b"}",
    "usage.cost": lambda v: b'{"cost":' + v + b"}",
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(f, v, id=f"{f}={v.decode()}")
        for f in FIELDS
        for v in HOSTILE_JSON
        if not (f == "usage.cost" and v == b"{}")  # an empty cost object is simply no cost
    ],
)
def test_hostile_cost_fields_are_ignored_with_a_warning(
    field: str, value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    if field == "usage.cost_sats" and value in (b"1e13", b"1000000000001"):
        value = b"1000000001"  # sats: above the bound of 10^9 sats
    with caplog.at_level(logging.WARNING, logger="arbstr.upstream"):
        assert cost_of(FIELDS[field](value)) is None
    warnings = [r for r in caplog.records if r.name == "arbstr.upstream"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert field in message and "provider p" in message
    assert FIELDS[field](value).decode() not in message  # never the raw body


@pytest.mark.parametrize(
    "header",
    ["NaN", "nan", "Infinity", "-Infinity", "inf", "-1000", "1e3", "abc", "0x10", "1" + "0" * 13],
)
def test_hostile_header_is_ignored_with_a_warning(
    header: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="arbstr.upstream"):
        assert provider_cost_msats(None, header, provider="p", request_id="rid-1") is None
    (record,) = [r for r in caplog.records if r.name == "arbstr.upstream"]
    assert "X-Routstr-Cost-Msats" in record.getMessage() and "provider p" in record.getMessage()
    assert getattr(record, "request_id", None) == "rid-1"


# --- token counts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "count"),
    [
        (b"12", 12),
        (b"0", 0),
        (b"1000000000", MAX_TOKENS),
        (b"1000000001", None),
        (b"9223372036854775808", None),
        (b"-1", None),
        (b"12.0", None),
        (b"true", None),
        (b'"12"', None),
        (b"null", None),
        (b"1e400", None),
        (b"[]", None),
    ],
)
def test_token_counts(value: bytes, count: int | None) -> None:
    usage = usage_of(b'{"prompt_tokens":' + value + b',"completion_tokens":' + value + b"}")
    assert usage is not None
    assert usage.prompt_tokens == count and usage.completion_tokens == count


def test_fields_are_read_independently(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="arbstr.upstream"):
        usage = usage_of(
            b'{"prompt_tokens":"12","completion_tokens":7,"cost_sats":"abc","cost":{"total_msats":5}}'
        )
    assert usage == Usage(prompt_tokens=None, completion_tokens=7, total_msats=5, sats_msats=None)
    messages = sorted(r.getMessage() for r in caplog.records)
    assert len(messages) == 2
    assert "usage.cost_sats from provider p: a string, not a number" in messages[0]
    assert "usage.prompt_tokens from provider p: a string, not a whole number" in messages[1]


# --- completion bodies ----------------------------------------------------------------------


def test_only_a_body_that_is_not_an_object_is_not_a_completion(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for body, reason in [(b"{nope", "not valid JSON"), (b"", "not valid JSON"), (b"[]", "object")]:
        with pytest.raises(NotACompletion, match=reason):
            completion_usage(body)
    assert completion_usage(b"{}") is None
    assert completion_usage(b'{"usage":null}') is None
    with caplog.at_level(logging.WARNING, logger="arbstr.upstream"):
        for odd in (b"[]", b'"x"', b"5", b"[1e400]"):
            assert usage_of(odd) is None
    assert len(caplog.records) == 4 and all("usage" in r.getMessage() for r in caplog.records)


def test_numbers_elsewhere_in_the_body_do_not_matter() -> None:
    body = b'{"choices":[{"logprobs":1e999}],"x":-1e400,"usage":{"prompt_tokens":3}}'
    assert completion_usage(body) == Usage(prompt_tokens=3)


def test_read_usage_of_an_absent_field() -> None:
    assert read_usage(msgspec.Raw()) is None
    assert read_usage(msgspec.Raw(b"null")) is None


# --- property: whatever the JSON, never raises, result within bounds ------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["1234", "1234.5", "-1", "NaN", " 7 ", "1e3"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
).map(msgspec.json.encode)
raw_numbers = st.sampled_from([b"1e400", b"-1e400", b"1E+30", b"-0", b"-0.0", b"1" + b"0" * 400])
field_json = json_values | raw_numbers


@settings(max_examples=400)
@given(
    prompt=field_json,
    completion=field_json,
    cost_sats=field_json,
    cost=field_json,
    total=field_json,
    nest_total=st.booleans(),
    header=st.none() | st.text(max_size=12) | st.sampled_from(["NaN", "1e400", "-0", "1234.5"]),
)
def test_property_any_json_in_any_field(
    prompt: bytes,
    completion: bytes,
    cost_sats: bytes,
    cost: bytes,
    total: bytes,
    nest_total: bool,
    header: str | None,
) -> None:
    cost_part = b'{"total_msats":' + total + b"}" if nest_total else cost
    usage_json = (
        b'{"prompt_tokens":' + prompt + b',"completion_tokens":' + completion
        + b',"cost_sats":' + cost_sats + b',"cost":' + cost_part + b"}"
    )  # fmt: skip
    logging.getLogger("arbstr.upstream").disabled = True
    try:
        usage = usage_of(usage_json)
        msats = provider_cost_msats(usage, header)
    finally:
        logging.getLogger("arbstr.upstream").disabled = False
    assert usage is not None
    for count in (usage.prompt_tokens, usage.completion_tokens):
        assert count is None or (type(count) is int and 0 <= count <= MAX_TOKENS)
    for amount in (msats, usage.total_msats, usage.sats_msats):
        assert amount is None or (type(amount) is int and 0 <= amount <= MAX_MSATS)


# --- property: float amounts convert exactly, as their decimal spelling says ----------------


@settings(max_examples=1000)
@given(
    value=st.floats(0, 10**9, allow_nan=False)
    | st.decimals(0, 10**9, places=3).map(float)
    | st.decimals(0, 10**6, places=6).map(float)
)
def test_property_float_amounts_are_exact(value: float) -> None:
    exact = Decimal(repr(value))
    floored = int((exact * 1000).to_integral_value(ROUND_FLOOR))
    assert cost_of(b'{"cost_sats":' + msgspec.json.encode(value) + b"}") == floored
    half_up = int(exact.quantize(Decimal(1), ROUND_HALF_UP))
    total = b'{"cost":{"total_msats":' + msgspec.json.encode(value) + b"}}"
    assert cost_of(total) == (half_up if half_up <= MAX_MSATS else None)


# --- cached prompt tokens -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("details", "cached"),
    [
        (b'{"cached_tokens":60}', 60),
        (b'{"cached_tokens":0,"audio_tokens":0}', 0),
        (b'{"cached_tokens":1000000000}', MAX_TOKENS),
        (b'{"cached_tokens":1000000001}', None),
        (b'{"cached_tokens":-1}', None),
        (b'{"cached_tokens":"60"}', None),
        (b'{"cached_tokens":60.0}', None),
        (b'{"cached_tokens":true}', None),
        (b'{"cached_tokens":null}', None),
        (b'{"cached_tokens":1e400}', None),
        (b"{}", None),
        (b"null", None),
        (b"[60]", None),
        (b"60", None),
        (b'"x"', None),
    ],
)
def test_cached_tokens(details: bytes, cached: int | None) -> None:
    body = b'{"prompt_tokens":69,"completion_tokens":5,"prompt_tokens_details":' + details + b"}"
    usage = usage_of(body)
    assert usage is not None
    assert usage.cached_tokens == cached
    # an odd details value never costs the other counts
    assert (usage.prompt_tokens, usage.completion_tokens) == (69, 5)
    # a field of a wrong type elsewhere (the field-by-field path) reads it the same way
    slow = usage_of(body[:-1] + b',"cost_sats":"junk"}')
    assert slow is not None and slow.cached_tokens == cached
    assert read_usage(msgspec.Raw(body)) == usage


def test_cached_tokens_with_a_cost_and_odd_details_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    usage = usage_of(
        b'{"prompt_tokens":69,"prompt_tokens_details":{"cached_tokens":60},'
        b'"cost":{"total_msats":5}}'
    )
    assert usage == Usage(prompt_tokens=69, total_msats=5, cached_tokens=60)
    with caplog.at_level(logging.WARNING, logger="arbstr.upstream"):
        assert usage_of(b'{"prompt_tokens_details":[1]}') == Usage()
        assert usage_of(b'{"prompt_tokens_details":{"cached_tokens":"6"}}') == Usage()
        assert usage_of(b'{"prompt_tokens_details":{"cached_tokens":-6}}') == Usage()
    messages = [r.getMessage() for r in caplog.records]
    assert "usage.prompt_tokens_details from provider p: not an object" in messages[0]
    assert "cached_tokens from provider p: a string, not a whole number" in messages[1]
    assert "cached_tokens from provider p: outside 0 to" in messages[2]


@settings(max_examples=300)
@given(details=field_json, cached=field_json, nest=st.booleans(), junk_cost=st.booleans())
def test_property_any_json_in_the_cached_count(
    details: bytes, cached: bytes, nest: bool, junk_cost: bool
) -> None:
    value = b'{"cached_tokens":' + cached + b"}" if nest else details
    usage_json = (
        b'{"prompt_tokens":7,"prompt_tokens_details":' + value
        + (b',"cost":"junk"' if junk_cost else b"") + b"}"
    )  # fmt: skip
    logging.getLogger("arbstr.upstream").disabled = True
    try:
        usage = usage_of(usage_json)
    finally:
        logging.getLogger("arbstr.upstream").disabled = False
    assert usage is not None and usage.prompt_tokens == 7
    c = usage.cached_tokens
    assert c is None or (type(c) is int and 0 <= c <= MAX_TOKENS)
    decoded = msgspec.json.decode(cached) if nest and cached not in (b"1e400", b"-1e400") else None
    if nest and type(decoded) is int and 0 <= decoded <= MAX_TOKENS:
        assert c == decoded
