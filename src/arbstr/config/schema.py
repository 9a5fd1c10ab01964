"""The config file's shape (msgspec Structs; unknown keys and wrong types are rejected).

``ServerSettings`` and ``RetrySettings`` are used as they are by the running program: the
loader only expands secrets in them. Providers and rules are resolved into
:mod:`arbstr.config.model` types (keys, rates, compiled keyword patterns)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from arbstr.config.listen import is_loopback_host, parse_listen

Strategy = Literal["lowest_cost", "lowest_latency"]
NonNeg = Annotated[float, Meta(ge=0)]
Positive = Annotated[float, Meta(gt=0)]
Name = Annotated[str, Meta(pattern=r"^[a-z0-9_-]+$", min_length=1, max_length=64)]
ModelName = Annotated[str, Meta(min_length=1, max_length=256)]

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_COOLDOWN_S = 300.0


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    listen: str = DEFAULT_LISTEN
    auth_token: str | None = None
    request_timeout_s: Positive = 120.0
    connect_timeout_s: Positive = 10.0
    stream_idle_timeout_s: Positive = 60.0
    max_body_bytes: Annotated[int, Meta(gt=0)] = DEFAULT_MAX_BODY_BYTES
    max_connections_per_provider: Annotated[int, Meta(ge=1)] = 1024  # per upstream origin
    keepalive_expiry_s: NonNeg = 5.0  # idle upstream connections older than this are closed
    # conversations kept for stickiness (0: off), each forgotten sticky_idle_s after its answer
    sticky_conversations: Annotated[int, Meta(ge=0)] = 10_000
    sticky_idle_s: Positive = 1800.0

    @property
    def host(self) -> str:
        return parse_listen(self.listen, where="server.listen")[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen, where="server.listen")[1]

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    def __repr__(self) -> str:  # never show the token
        return f"ServerSettings(listen={self.listen!r}, auth={'on' if self.auth_token else 'off'})"


class DatabaseSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    path: str | None = None  # the SQLite file
    url: str | None = None  # postgresql://user:password@host:port/db instead of a file


class MetricsSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``[metrics]``: ``GET /metrics`` in the Prometheus text format (off by default)."""

    enabled: bool = False


class RetrySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    max_attempts_per_provider: Annotated[int, Meta(ge=1, le=20)] = 3
    backoff_base_ms: NonNeg = 500.0
    backoff_max_ms: NonNeg = 5000.0
    fallback: bool = True
    retry_after_cap_s: NonNeg = 30.0
    retry_on_timeout: bool = False
    deadline_s: Positive = 180.0
    breaker_failures: Annotated[int, Meta(ge=1)] = 3
    breaker_cooldown_s: NonNeg = 30.0
    # a provider's Retry-After lengthens the cool-down up to this; unset: 300 s, or
    # breaker_cooldown_s when that is longer
    breaker_max_cooldown_s: NonNeg | None = None

    @property
    def max_cooldown_s(self) -> float:
        if self.breaker_max_cooldown_s is not None:
            return self.breaker_max_cooldown_s
        return max(DEFAULT_MAX_COOLDOWN_S, self.breaker_cooldown_s)


class ModelRateSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    input_rate: NonNeg | None = None
    output_rate: NonNeg | None = None
    base_fee: NonNeg | None = None
    cache_read_rate: NonNeg | None = None  # default: this section's input_rate
    cache_write_rate: NonNeg | None = None


class ModelInfoSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What the config says of one model's limits (over what discovery found)."""

    context_length: Annotated[int, Meta(gt=0)] | None = None
    max_completion_tokens: Annotated[int, Meta(gt=0)] | None = None
    input_modalities: list[Annotated[str, Meta(min_length=1)]] | None = None
    tools: bool | None = None


class ProviderSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    name: Name
    url: Annotated[str, Meta(min_length=1)]
    api_key: str | None = None
    models: list[ModelName] = []
    input_rate: NonNeg = 0.0
    output_rate: NonNeg = 0.0
    base_fee: NonNeg = 0.0
    cache_read_rate: NonNeg | None = None  # sats per 1000 cached prompt tokens; default input_rate
    cache_write_rate: NonNeg | None = None  # ... written to the cache; default input_rate
    discover: bool = False
    discover_interval_s: Positive = 120.0
    balance_interval_s: NonNeg = 300.0  # GET /balance/info this often (with a key); 0: never
    model_rates: dict[str, ModelRateSection] = {}
    apis: list[str] | None = None  # the client APIs it serves (checked by the loader); None: all
    model_info: dict[str, ModelInfoSection] = {}


class RuleSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    name: Name
    allowed_models: list[ModelName] = []
    strategy: Strategy | None = None
    max_sats_per_1k_output: NonNeg | None = None
    keywords: list[Annotated[str, Meta(min_length=1)]] = []
    keyword_regex: Annotated[str, Meta(min_length=1)] | None = None
    # re-ask a tiered answer that shows a failure signal one tier up (streams: buffered)
    escalate: bool = False
    escalate_streams: bool = False


class PoliciesSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    default_strategy: Strategy = "lowest_cost"
    escalate: bool = False  # the default rule's
    escalate_streams: bool = False
    rules: list[RuleSection] = []


class TierSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    name: str  # economy | standard | frontier (checked by the loader)
    models: list[ModelName] = []


Fraction = Annotated[float, Meta(ge=0, le=1)]


class ComplexitySection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``[complexity]``: weights of the scorer's signals (by name) and the tier thresholds."""

    weights: dict[str, Annotated[float, Meta(ge=0, le=100)]] = {}
    economy_below: Fraction = 0.35
    frontier_from: Fraction = 0.70


class BudgetSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ``[[budgets]]`` entry: at most ``sats`` per UTC ``per`` within its scope."""

    name: Name
    sats: NonNeg
    per: Literal["day", "week", "month"] = "day"
    policy: Name | None = None
    model: ModelName | None = None
    provider: Name | None = None
    action: Literal["reject", "downgrade"] = "reject"


class FileConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    metrics: MetricsSettings = MetricsSettings()
    retry: RetrySettings = RetrySettings()
    providers: list[ProviderSection] = []
    policies: PoliciesSection = PoliciesSection()
    tiers: list[TierSection] = []
    complexity: ComplexitySection = ComplexitySection()
    budgets: list[BudgetSection] = []
