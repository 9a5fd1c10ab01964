"""Configuration: the TOML file's shape (:mod:`.schema`), the resolved model the program uses
(:mod:`.model`), and loading with errors that name file, field and reason (:mod:`.load`)."""

from arbstr.config.listen import is_loopback_host, parse_listen
from arbstr.config.load import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_DB_PATH,
    config_from_data,
    load_config,
    resolve_config_path,
    resolve_db_path,
)
from arbstr.config.model import (
    TIER_NAMES,
    Budget,
    Config,
    ModelInfo,
    Period,
    Policies,
    Provider,
    Rule,
    Tier,
)
from arbstr.config.schema import DEFAULT_LISTEN, RetrySettings, ServerSettings, Strategy
from arbstr.config.secrets import convention_env_name, mask_secret

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_DB_PATH",
    "DEFAULT_LISTEN",
    "TIER_NAMES",
    "Budget",
    "Config",
    "ModelInfo",
    "Period",
    "Policies",
    "Provider",
    "RetrySettings",
    "Rule",
    "ServerSettings",
    "Strategy",
    "Tier",
    "config_from_data",
    "convention_env_name",
    "is_loopback_host",
    "load_config",
    "mask_secret",
    "parse_listen",
    "resolve_config_path",
    "resolve_db_path",
]
