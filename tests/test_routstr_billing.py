"""What arbstr says a request cost against what a Routstr node really took from the key.

Each test runs the real proxy (tests/harness.py) with a config file written to tmp_path, its
providers ``discover = true`` against fake Routstr nodes (tests/fake_routstr.py), drives it
with the official ``openai`` SDK, and compares arbstr's figures (headers, stream trailer,
``/v1/requests``, ``/v1/stats``, ``/health``) with the node's balance change, to the millisat.
"""

from __future__ import annotations

import http.client
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from arbstr.config import config_from_data, load_config
from arbstr.storage import Store
from fake_routstr import FakeRoutstr, NodeModel, Plan
from harness import ProxyThread

StartNode = Callable[..., FakeRoutstr]

PROMPT = "Summarise the Lightning Network in one sentence, please, thank you."
MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]
PROMPT_TOKENS = math.ceil(len(PROMPT) / 4)  # what the node counts and arbstr estimates
FUNDED = 10_000_000  # msats

# at the nodes' default 100k USD/BTC, 1 USD = 1000 sats: 0.003 / 0.015 sats per token
SONNET = NodeModel("claude-3.5-sonnet", 3e-6, 15e-6, vendor="anthropic")
SONNET_FEE = replace(SONNET, request_usd=5.178e-3)  # sats_pricing.request = 5.178
GPT4O_USD = NodeModel("gpt-4o", 2.5e-6, 1e-5, upstream_cost_usd=2.072e-3)  # bills 2.072 sats


def key_of(name: str) -> str:
    return f"sk-{name}-billing-test-key-0123"


def sats(msats: int) -> float:
    return msats / 1000


def header_sats(msats: int) -> str:
    return f"{msats // 1000}.{msats % 1000:03d}"


# --- arbstr under test ---------------------------------------------------------------------


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for the plain values used here
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


def write_config(tmp_path: Path, sections: Mapping[str, Mapping[str, Any]], providers: Any) -> Path:
    lines: list[str] = []
    for section, values in sections.items():
        lines += [f"[{section}]", *(f"{k} = {toml_value(v)}" for k, v in values.items()), ""]
    for entry in providers:
        lines += ["[[providers]]", *(f"{k} = {toml_value(v)}" for k, v in entry.items()), ""]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


@dataclass
class Arbstr:
    proxy: ProxyThread
    store: Store
    client: openai.OpenAI

    def get(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.proxy.port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        assert resp.status in (200, 503), (resp.status, body)
        return json.loads(body)

    def rows(self, n: int = 1, timeout_s: float = 3.0) -> list[dict[str, Any]]:
        """The newest request-log rows, once at least ``n`` were written."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.store.flush()
            page = self.get("/v1/requests?per_page=100")
            if page["total"] >= n or time.monotonic() > deadline:
                assert page["total"] >= n, f"{page['total']} of {n} rows written"
                data: list[dict[str, Any]] = page["data"]
                return data
            time.sleep(0.02)

    def stats(self) -> dict[str, Any]:
        self.store.flush()
        result: dict[str, Any] = self.get("/v1/stats?range=last_1h")
        return result


@pytest.fixture
def arbstr(tmp_path: Path, proxies: list[ProxyThread]) -> Iterator[Callable[..., Arbstr]]:
    """``arbstr(nodes, server=..., retry=..., **provider_fields)``: a started proxy whose
    providers (one per named node, with its key from the environment) discover prices."""
    clients: list[openai.OpenAI] = []

    def start(
        nodes: Mapping[str, FakeRoutstr],
        *,
        server: Mapping[str, Any] | None = None,
        retry: Mapping[str, Any] | None = None,
        **provider_fields: Any,
    ) -> Arbstr:
        entries = [
            {"name": name, "url": node.url, "discover": True, **provider_fields}
            for name, node in nodes.items()
        ]
        sections = {"retry": {"backoff_base_ms": 1, "backoff_max_ms": 1, **(retry or {})}}
        if server:
            sections["server"] = dict(server)
        path = write_config(tmp_path, sections, entries)
        env = {f"ARBSTR_{name.upper()}_API_KEY": key_of(name) for name in nodes}
        store = Store.open(str(tmp_path / "requests.db"))
        proxy = ProxyThread(load_config(path, env=env), sink=store).start()
        proxies.append(proxy)
        client = openai.OpenAI(
            base_url=proxy.url + "/v1", api_key="unused", max_retries=0, timeout=10
        )
        clients.append(client)
        return Arbstr(proxy, store, client)

    yield start
    for c in clients:
        c.close()


def node_for(
    routstr_node: StartNode, name: str, models: Sequence[NodeModel], balance: int = FUNDED
) -> FakeRoutstr:
    return routstr_node(models, keys={key_of(name): balance})


def spent(node: FakeRoutstr, name: str, before: int = FUNDED) -> int:
    """What the node took from the provider's key, in msats."""
    return before - node.balance(key_of(name))


def stream_trailer(chunks: list[ChatCompletionChunk]) -> dict[str, Any]:
    last = chunks[-1]
    assert last.choices == [] and last.model_extra is not None, last
    trailer: dict[str, Any] = last.model_extra["arbstr"]
    return trailer


# --- 1. sats_pricing.request is never billed ------------------------------------------------


def test_request_price_is_not_part_of_the_cost(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    node = node_for(routstr_node, "fee", [SONNET_FEE])
    arb = arbstr({"fee": node})
    raw = arb.client.chat.completions.with_raw_response.create(
        model="claude-3.5-sonnet", messages=MSG
    )
    charge = spent(node, "fee")
    assert charge == PROMPT_TOKENS * 3 + 12 * 15  # 0.003 / 0.015 sats per token, no 5.178
    assert raw.headers["x-arbstr-cost-sats"] == header_sats(charge)
    assert arb.rows()[0]["cost"]["sats"] == sats(charge)


def test_request_price_does_not_steer_routing(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    """A large ``request`` price with lower token prices is the cheaper provider."""
    cheaper = replace(SONNET_FEE, prompt_usd=2e-6, completion_usd=10e-6)
    feeful = node_for(routstr_node, "feeful", [cheaper])
    plain = node_for(routstr_node, "plain", [SONNET])
    arb = arbstr({"feeful": feeful, "plain": plain})
    raw = arb.client.chat.completions.with_raw_response.create(
        model="claude-3.5-sonnet", messages=MSG
    )
    assert raw.headers["x-arbstr-provider"] == "feeful"
    assert spent(plain, "plain") == 0
    assert raw.headers["x-arbstr-cost-sats"] == header_sats(spent(feeful, "feeful"))


# --- 2. the upstream reported a USD cost ----------------------------------------------------


def test_node_reported_usd_cost_is_the_cost(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    node = node_for(routstr_node, "usd", [GPT4O_USD])
    arb = arbstr({"usd": node})
    raw = arb.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSG)
    charge = spent(node, "usd")
    (rec,) = node.requests
    assert charge == rec.charged_msats == 2072 != rec.formula_msats
    assert raw.headers["x-arbstr-cost-sats"] == "2.072"
    assert raw.headers["x-arbstr-cost-source"] == "provider"
    cost = arb.rows()[0]["cost"]
    assert cost["sats"] == cost["provider_sats"] == sats(charge)
    assert cost["computed_sats"] == sats(rec.formula_msats)
    assert cost["source"] == "provider"


def test_node_reported_usd_cost_is_the_cost_streaming(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    node = node_for(routstr_node, "usd", [GPT4O_USD])
    arb = arbstr({"usd": node})
    chunks = list(arb.client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True))
    trailer = stream_trailer(chunks)
    (rec,) = node.requests
    assert trailer["cost_sats"] == sats(spent(node, "usd")) == 2.072
    assert trailer["cost_source"] == "provider"
    assert trailer["provider_cost_sats"] == 2.072
    assert trailer["computed_cost_sats"] == sats(rec.formula_msats)


# --- 3. cached prompt tokens ----------------------------------------------------------------

CACHED = Plan(prompt_tokens=69, cached_tokens=60, completion_tokens=12)
CACHED_MSATS = 9 * 3 + 60 * 3 // 10 + 12 * 15  # at prompt, input_cache_read, completion


def test_cached_prompt_tokens_cost_what_the_node_bills(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    node = node_for(routstr_node, "cache", [SONNET])
    node.push(CACHED)
    arb = arbstr({"cache": node})
    raw = arb.client.chat.completions.with_raw_response.create(
        model="claude-3.5-sonnet", messages=MSG
    )
    assert spent(node, "cache") == CACHED_MSATS == 225
    assert raw.headers["x-arbstr-cost-sats"] == "0.225"
    cost = arb.rows()[0]["cost"]
    assert cost["sats"] == 0.225
    assert cost["computed_sats"] == 0.225  # arbstr's own figure prices the cached tokens too


def test_cached_prompt_tokens_cost_what_the_node_bills_streaming(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    node = node_for(routstr_node, "cache", [SONNET])
    node.push(CACHED)
    arb = arbstr({"cache": node})
    chunks = list(
        arb.client.chat.completions.create(model="claude-3.5-sonnet", messages=MSG, stream=True)
    )
    trailer = stream_trailer(chunks)
    assert trailer["cost_sats"] == sats(spent(node, "cache")) == 0.225
    assert trailer["computed_cost_sats"] == 0.225


# --- 4. read timeout at arbstr, the node bills anyway --------------------------------------

MAX_TOKENS = 50


def estimate_msats(node: FakeRoutstr, model: str) -> int:
    """arbstr's routing estimate: message characters / 4 in, max_tokens out."""
    return node.pricing(model).tokens_msats(PROMPT_TOKENS, 0, MAX_TOKENS)


def test_timed_out_request_is_possibly_billed_and_covers_the_charge(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    node = node_for(routstr_node, "slow", [SONNET])
    node.push(Plan(delay_s=0.8))
    arb = arbstr({"slow": node}, server={"request_timeout_s": 0.3})
    with pytest.raises(openai.APIStatusError) as exc:
        arb.client.chat.completions.create(
            model="claude-3.5-sonnet", messages=MSG, max_tokens=MAX_TOKENS
        )
    assert exc.value.status_code == 504
    charge = spent(node, "slow")
    assert charge == PROMPT_TOKENS * 3 + 12 * 15  # billed in full, though nobody got it
    cost = arb.rows()[0]["cost"]
    assert cost["sats"] is None
    billed = cost["possibly_billed_sats"]
    assert billed is not None and sats(charge) <= billed == sats(estimate_msats(node, SONNET.id))
    assert arb.stats()["costs"]["possibly_billed_sats"] == billed


def test_retried_timeouts_are_each_possibly_billed(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    node = node_for(routstr_node, "slow", [SONNET])
    node.default = Plan(delay_s=0.6)
    arb = arbstr(
        {"slow": node},
        server={"request_timeout_s": 0.25},
        retry={"retry_on_timeout": True, "max_attempts_per_provider": 3},
    )
    with pytest.raises(openai.APIStatusError) as exc:
        arb.client.chat.completions.create(
            model="claude-3.5-sonnet", messages=MSG, max_tokens=MAX_TOKENS
        )
    assert exc.value.status_code == 504  # every attempt timed out: 504 upstream_timeout
    assert len(node.wait_requests(3)) == 3
    one = PROMPT_TOKENS * 3 + 12 * 15
    assert spent(node, "slow") == 3 * one
    row = arb.rows()[0]
    assert row["cost"]["possibly_billed_sats"] == sats(3 * estimate_msats(node, SONNET.id))
    assert arb.stats()["costs"]["possibly_billed_sats"] == row["cost"]["possibly_billed_sats"]


# --- 5. the client leaves mid-stream, the node bills the whole answer ----------------------


def test_client_leaving_mid_stream_is_possibly_billed(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    node = node_for(routstr_node, "long", [SONNET])
    node.push(Plan(completion_tokens=300, chunk_delay_s=0.003))
    arb = arbstr({"long": node})
    stream = arb.client.chat.completions.create(
        model="claude-3.5-sonnet", messages=MSG, stream=True, max_tokens=400
    )
    got = 0
    for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            got += 1
            if got == 10:
                break
    stream.close()
    charge = spent(node, "long")
    assert charge == PROMPT_TOKENS * 3 + 300 * 15  # all 300 tokens
    row = arb.rows()[0]
    assert row["success"] is False
    billed = row["cost"]["possibly_billed_sats"]
    assert billed is not None and billed >= sats(charge)


# --- 6. an underfunded key ------------------------------------------------------------------


def test_underfunded_cheaper_provider_falls_back_to_a_funded_one(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    """Balance not polled: the cheaper node is tried, answers 402, and the funded one serves."""
    cheap_model = replace(SONNET, prompt_usd=2e-6, completion_usd=10e-6)
    cheap = node_for(routstr_node, "cheap", [cheap_model], balance=100_000)  # < 419.84 sats
    funded = node_for(routstr_node, "funded", [SONNET])
    arb = arbstr({"cheap": cheap, "funded": funded}, balance_interval_s=0)
    raw = arb.client.chat.completions.with_raw_response.create(
        model="claude-3.5-sonnet", messages=MSG
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-arbstr-provider"] == "funded"
    assert raw.headers["x-arbstr-retries"] == "1/cheap"
    assert raw.headers["x-arbstr-cost-sats"] == header_sats(spent(funded, "funded"))
    assert cheap.balance(key_of("cheap")) == 100_000  # nothing charged
    assert [r.status for r in cheap.requests] == [402]
    health = arb.get("/health")["providers"]["cheap"]
    assert health["funds"] == "insufficient"
    assert health["consecutive_failures"] == 0  # a 402 is no strike against the breaker
    # the next request goes to the funded node first: no second 402
    arb.client.chat.completions.create(model="claude-3.5-sonnet", messages=MSG)
    assert len(cheap.requests) == 1


def test_known_short_balance_ranks_the_cheaper_provider_last(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    """Balance polled: arbstr knows the cheaper node would refuse, and does not ask it."""
    cheap_model = replace(SONNET, prompt_usd=2e-6, completion_usd=10e-6)
    # 300 sats: below the 419.84 the node reserves, above its 256.2 when max_tokens is 20
    cheap = node_for(routstr_node, "cheap", [cheap_model], balance=300_000)
    funded = node_for(routstr_node, "funded", [SONNET])
    arb = arbstr({"cheap": cheap, "funded": funded}, balance_interval_s=60)
    deadline = time.monotonic() + 5
    while arb.get("/health")["providers"]["cheap"].get("balance_sats") is None:
        assert time.monotonic() < deadline, "the balance was never polled"
        time.sleep(0.02)
    raw = arb.client.chat.completions.with_raw_response.create(
        model="claude-3.5-sonnet", messages=MSG
    )
    assert raw.headers["x-arbstr-provider"] == "funded"
    assert "x-arbstr-retries" not in raw.headers
    assert cheap.requests == []
    # with max_tokens small enough, the node's reservation fits the balance: cheap serves
    raw = arb.client.chat.completions.with_raw_response.create(
        model="claude-3.5-sonnet", messages=MSG, max_tokens=20
    )
    assert raw.headers["x-arbstr-provider"] == "cheap"
    charged = 300_000 - cheap.balance(key_of("cheap"))
    assert charged > 0 and raw.headers["x-arbstr-cost-sats"] == header_sats(charged)


def test_single_underfunded_provider_answers_402(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    node = node_for(routstr_node, "poor", [SONNET], balance=1_000)
    arb = arbstr({"poor": node})
    with pytest.raises(openai.APIStatusError) as exc:
        arb.client.chat.completions.create(model="claude-3.5-sonnet", messages=MSG)
    assert exc.value.status_code == 402
    assert node.balance(key_of("poor")) == 1_000


# --- 7. BTC moves, the node re-prices, arbstr follows ---------------------------------------


def test_repriced_node_and_arbstr_agree_after_the_refresh(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    node = node_for(routstr_node, "fx", [SONNET])
    arb = arbstr({"fx": node}, discover_interval_s=0.2)
    arb.client.chat.completions.create(model="claude-3.5-sonnet", messages=MSG)
    first = node.requests[0].charged_msats
    node.set_btc_usd(100_000 * 1.077)
    calls = node.models_calls
    deadline = time.monotonic() + 2
    while node.models_calls < calls + 2:  # the second fetch began after the first finished
        assert time.monotonic() < deadline, "arbstr did not refresh its prices"
        time.sleep(0.02)
    raw = arb.client.chat.completions.with_raw_response.create(
        model="claude-3.5-sonnet", messages=MSG
    )
    second = node.requests[1].charged_msats
    assert second < first
    assert spent(node, "fx") == first + second
    assert raw.headers["x-arbstr-cost-sats"] == header_sats(second)
    newest = arb.rows(2)[0]
    assert newest["cost"]["computed_sats"] == sats(second)


def test_discovering_providers_refresh_every_120_s_by_default() -> None:
    data = {
        "providers": [
            {"name": "node", "url": "http://127.0.0.1:9/v1", "discover": True},
            {
                "name": "set",
                "url": "http://127.0.0.1:9/v1",
                "discover": True,
                "discover_interval_s": 30,
            },
        ]
    }
    config = config_from_data(data, source="<test>", env={})
    assert [p.discover_interval_s for p in config.providers] == [120.0, 30.0]


# --- 8. vendor-prefixed model ids ------------------------------------------------------------


def test_vendor_prefixed_model_is_served_by_the_listed_short_id(
    routstr_node: StartNode, arbstr: Callable[..., Arbstr]
) -> None:
    node = node_for(routstr_node, "vendor", [SONNET])
    arb = arbstr({"vendor": node})
    raw = arb.client.chat.completions.with_raw_response.create(
        model="anthropic/claude-3.5-sonnet", messages=MSG
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-arbstr-cost-sats"] == header_sats(spent(node, "vendor"))
    assert arb.rows()[0]["model"] == "claude-3.5-sonnet"
