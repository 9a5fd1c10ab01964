"""The resolved configuration the program uses (built by :mod:`arbstr.config.load`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import msgspec

from arbstr.config.listen import parse_listen
from arbstr.config.schema import RetrySettings, ServerSettings, Strategy
from arbstr.config.secrets import mask_secret
from arbstr.money import Rates


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    url: str  # no trailing slash; chat endpoint is f"{url}/chat/completions"
    api_key: str | None = field(repr=False)
    key_source: str  # human description of where the key came from; never the key
    models: frozenset[str] | None  # None: any model
    model_order: tuple[str, ...]  # models in config order, for listings
    rates: Rates
    model_rates: Mapping[str, Rates]
    discover: bool = False
    discover_interval_s: float = 120.0
    balance_interval_s: float = 300.0  # 0: the balance is not polled

    def serves(self, model: str) -> bool:
        return self.models is None or model in self.models

    def rates_for(self, model: str) -> Rates:
        return self.model_rates.get(model, self.rates)

    @property
    def masked_key(self) -> str:
        return mask_secret(self.api_key)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    allowed_models: tuple[str, ...]
    strategy: Strategy
    max_sats_per_1k_output: float | None
    keywords: tuple[str, ...]  # lower-cased
    # the rule's keyword_regex (case-insensitive): matched instead of the keywords
    keyword_regex: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class Policies:
    default: Rule
    rules: tuple[Rule, ...]
    by_name: Mapping[str, Rule]
    has_keywords: bool


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # the file it came from, or a description like "<mock>"
    server: ServerSettings
    retry: RetrySettings
    providers: tuple[Provider, ...]
    policies: Policies
    db_path: str | None
    warnings: tuple[str, ...] = ()

    def with_listen(self, listen: str) -> Config:
        parse_listen(listen, where="--listen")
        return replace(self, server=msgspec.structs.replace(self.server, listen=listen))

    def with_db_path(self, path: str) -> Config:
        return replace(self, db_path=path)
