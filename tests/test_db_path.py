"""The request log's path, one resolver for `serve` (a loaded config) and `stats`/`requests`
(a config file of which only [database] is read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbstr.config import load_config, resolve_db_path
from arbstr.errors import ConfigError

# a provider whose key variable is unset and an invalid rule: load_config would refuse this
NOT_LOADABLE = (
    '[database]\npath = "from-file.db"\n\n'
    '[[providers]]\nname = "a"\nurl = "http://x"\napi_key = "${UNSET_VARIABLE_FOR_TEST}"\n\n'
    '[[policies.rules]]\nname = "default"\n'
)


def test_a_config_file_is_read_for_its_database_table_only(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(NOT_LOADABLE)
    with pytest.raises(ConfigError):
        load_config(path, env={})
    assert resolve_db_path(None, path, {}) == "from-file.db"
    path.write_text('[[providers]]\nname = "a"\nurl = "http://x"\n')
    assert resolve_db_path(None, path, {}) == "arbstr.db"


def test_precedence_and_the_file_is_read_only_when_needed(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    env = {"ARBSTR_DB": "from-env.db"}
    assert resolve_db_path("cli.db", missing, env) == "cli.db"
    assert resolve_db_path(None, missing, env) == "from-env.db"
    assert resolve_db_path(None, None, {}) == "arbstr.db"
    assert resolve_db_path("", None, {"ARBSTR_DB": ""}) == "arbstr.db"  # empty = not given
    with pytest.raises(ConfigError, match=r"missing\.toml: config file not found"):
        resolve_db_path(None, missing, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[database]\npath = 5\n", r"database\.path: Expected `str \| null`, got `int`"),
        ("[database]\nfile = 'x.db'\n", r"database\.file: unknown key"),
        ("database = 'x.db'\n", r"database: Expected `object`, got `str`"),
        ("[database\n", "invalid TOML"),
    ],
)
def test_a_bad_database_table_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        resolve_db_path(None, path, {})
