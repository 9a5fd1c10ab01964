"""The resolved configuration the program uses (built by :mod:`arbstr.config.load`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import msgspec

from arbstr.apinames import ALL_APIS, ApiName
from arbstr.config.complexity import DEFAULT_COMPLEXITY, ComplexitySettings
from arbstr.config.listen import parse_listen
from arbstr.config.schema import MetricsSettings, RetrySettings, ServerSettings, Strategy
from arbstr.config.secrets import mask_secret
from arbstr.money import Rates


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a Routstr node's ``GET /models`` says of one model beyond its prices (None or empty:
    not given, or not usable)."""

    max_cost_msats: int | None = None  # sats_pricing.max_cost: the node's worst case per request
    max_completion_cost_msats: int | None = None  # sats_pricing.max_completion_cost
    context_length: int | None = None
    max_completion_tokens: int | None = None  # top_provider.max_completion_tokens
    input_modalities: tuple[str, ...] = ()  # architecture.input_modalities
    canonical_slug: str | None = None  # another id the node serves this model under
    tools: bool | None = None  # whether it takes tool definitions (None: not known)

    def overlaid(self, over: ModelInfo) -> ModelInfo:
        """This (discovered) info with what ``over`` (the config's) gives taking precedence."""
        return replace(
            self,
            context_length=over.context_length or self.context_length,
            max_completion_tokens=over.max_completion_tokens or self.max_completion_tokens,
            input_modalities=over.input_modalities or self.input_modalities,
            tools=self.tools if over.tools is None else over.tools,
        )


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    url: str  # no trailing slash; chat endpoint is f"{url}/chat/completions" (each API its own)
    api_key: str | None = field(repr=False)
    key_source: str  # human description of where the key came from; never the key
    models: frozenset[str] | None  # None: any model
    model_order: tuple[str, ...]  # models in config order, for listings
    rates: Rates
    model_rates: Mapping[str, Rates]
    discover: bool = False
    discover_interval_s: float = 120.0
    balance_interval_s: float = 300.0  # 0: the balance is not polled
    model_info: Mapping[str, ModelInfo] = field(default_factory=dict)  # from price discovery
    apis: frozenset[ApiName] = frozenset(ALL_APIS)  # the client APIs it serves natively
    # canonical_slug -> listed id, built with the provider (once per price refresh)
    _slugs: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_slugs", _slug_index(self.models, self.model_info))

    def serves(self, model: str) -> bool:
        return self.resolve(model) is not None

    def resolve(self, model: str) -> str | None:
        """The listed id this provider serves ``model`` as, or None: the id itself when listed;
        else the listed model whose ``canonical_slug`` it is; else, for ``vendor/name``, a
        listed ``name``. A provider of any model serves it unchanged."""
        models = self.models
        if models is None or model in models:
            return model
        listed = self._slugs.get(model)
        if listed is not None:
            return listed
        _, slash, name = model.partition("/")
        return name if slash and name in models else None

    def rates_for(self, model: str) -> Rates:
        return self.model_rates.get(model, self.rates)

    @property
    def masked_key(self) -> str:
        return mask_secret(self.api_key)


def _slug_index(models: frozenset[str] | None, info: Mapping[str, ModelInfo]) -> Mapping[str, str]:
    """Each listed model's canonical slug -> its id (a slug that is itself listed, or that two
    listed models claim, is left out: the exact id wins, and an ambiguous slug names neither)."""
    if models is None or not info:
        return {}
    out: dict[str, str] = {}
    shared: set[str] = set()
    for model in sorted(models):
        slug = info[model].canonical_slug if model in info else None
        if slug is None or slug in models or slug in shared:
            continue
        if slug in out:
            shared.add(slug)
            del out[slug]
        else:
            out[slug] = model
    return out


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    allowed_models: tuple[str, ...]
    strategy: Strategy
    max_sats_per_1k_output: float | None
    keywords: tuple[str, ...]  # lower-cased
    # the rule's keyword_regex (case-insensitive): matched instead of the keywords
    keyword_regex: re.Pattern[str] | None = None
    # a tiered answer with a failure signal is re-asked one tier up (routing.escalation);
    # streams only with escalate_streams (the stream is then buffered)
    escalate: bool = False
    escalate_streams: bool = False


@dataclass(frozen=True, slots=True)
class Policies:
    default: Rule
    rules: tuple[Rule, ...]
    by_name: Mapping[str, Rule]
    has_keywords: bool


NO_METRICS = MetricsSettings()
TIER_NAMES = ("economy", "standard", "frontier")  # cheapest first


@dataclass(frozen=True, slots=True)
class Tier:
    name: str  # one of TIER_NAMES
    models: tuple[str, ...]  # as configured (ids or aliases)


Period = Literal["day", "week", "month"]  # a budget's UTC calendar window


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``limit_msats`` per ``per`` for the requests it covers: every request, or those
    of one policy, model or provider (each given scope must match)."""

    name: str
    limit_msats: int
    per: Period
    action: Literal["reject", "downgrade"]
    policy: str | None = None
    model: str | None = None
    provider: str | None = None

    def covers(self, policy: str | None, model: str | None, provider: str | None) -> bool:
        """Whether a request of ``policy`` answered by ``provider``'s ``model`` counts here
        (a model matches with or without its vendor prefix: ``openai/gpt-4o`` is ``gpt-4o``)."""
        if self.policy is not None and policy != self.policy:
            return False
        if self.provider is not None and provider != self.provider:
            return False
        want = self.model
        if want is None or model == want:
            return True
        if model is None:
            return False
        return model.endswith("/" + want) or want.endswith("/" + model)

    @property
    def scope(self) -> str:
        """``policy=code, model=gpt-4o``, or ``all requests``."""
        parts = [f"{k}={v}" for k, v in self._scope_items() if v is not None]
        return ", ".join(parts) or "all requests"

    def _scope_items(self) -> tuple[tuple[str, str | None], ...]:
        return (("policy", self.policy), ("model", self.model), ("provider", self.provider))


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # the file it came from, or a description like "<mock>"
    server: ServerSettings
    retry: RetrySettings
    providers: tuple[Provider, ...]
    policies: Policies
    db_path: str | None
    warnings: tuple[str, ...] = ()
    tiers: tuple[Tier, ...] = ()  # configured [[tiers]], cheapest first
    complexity: ComplexitySettings = DEFAULT_COMPLEXITY
    budgets: tuple[Budget, ...] = ()
    metrics: MetricsSettings = NO_METRICS

    def with_listen(self, listen: str) -> Config:
        parse_listen(listen, where="--listen")
        return replace(self, server=msgspec.structs.replace(self.server, listen=listen))

    def with_db_path(self, path: str) -> Config:
        return replace(self, db_path=path)
