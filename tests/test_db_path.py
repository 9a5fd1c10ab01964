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


# --- PostgreSQL: [database].url and $ARBSTR_DATABASE_URL ------------------------------------

PG = "postgresql://arbstr:s3cret-pass@db.internal:5432/arbstr"
PG_ENV = "postgres://other:env-s3cret@127.0.0.1:5433/log"


def test_a_url_is_the_request_log_and_the_config_wins_over_the_environment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "{PG}"\n')
    env = {"ARBSTR_DATABASE_URL": PG_ENV}
    assert resolve_db_path(None, path, env) == PG
    assert resolve_db_path("cli.db", path, env) == "cli.db"  # --db still first
    assert resolve_db_path(None, path, {**env, "ARBSTR_DB": "env.db"}) == "env.db"  # and $ARBSTR_DB
    assert resolve_db_path(PG_ENV, path, {}) == PG_ENV  # --db takes a URL too
    path.write_text('[database]\npath = "file.db"\n')
    assert resolve_db_path(None, path, env) == PG_ENV  # no url in the config: the env's
    assert resolve_db_path(None, path, {}) == "file.db"
    assert resolve_db_path(None, None, {"ARBSTR_DATABASE_URL": PG_ENV}) == PG_ENV


def test_a_loaded_config_carries_its_url(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "{PG}"\n\n[[providers]]\nname = "a"\nurl = "http://x"\n')
    cfg = load_config(path, env={})
    assert cfg.db_url == PG
    assert resolve_db_path(None, cfg, {"ARBSTR_DATABASE_URL": PG_ENV}) == PG
    assert resolve_db_path(None, cfg.with_db_path(PG), {}) == PG


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('[database]\nurl = "mysql://u:s3cret-pass@h/db"\n', {}, r"database\.url: expected"),
        (
            f'[database]\nurl = "{PG}"\npath = "x.db"\n',
            {},
            "give url \\(PostgreSQL\\) or path \\(SQLite\\), not both",
        ),
        ("", {"ARBSTR_DATABASE_URL": "https://u:s3cret-pass@h/db"}, r"\$ARBSTR_DATABASE_URL"),
    ],
)
def test_a_bad_url_is_named_without_its_password(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        resolve_db_path(None, path, env)
    assert "s3cret-pass" not in str(info.value)
