"""Read-only access to a SQLite request log: the file opened read-only, checked to be an
arbstr log of a schema this arbstr can read, and an older schema shown as the latest (the CLI
reads a file that no newer ``arbstr serve`` has opened)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from arbstr.errors import DatabaseUnavailable
from arbstr.storage.schema import SchemaTooNew, check_not_newer, user_version


def open_readonly(path: str) -> sqlite3.Connection:
    """A read-only connection to an arbstr request log; :class:`DatabaseUnavailable` if the
    file is missing, unreadable, not a request log, or of a newer schema."""
    p = Path(path)
    if not p.is_file():
        raise DatabaseUnavailable(f"no request log at {path} (`arbstr serve` creates it)")
    try:
        conn = sqlite3.connect(
            p.resolve().as_uri() + "?mode=ro", uri=True, timeout=5.0, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise DatabaseUnavailable(f"cannot open the request log {path}: {exc}") from None
    try:
        version = user_version(conn)
        if version == 0:
            raise DatabaseUnavailable(f"{path} is not an arbstr request log (no schema)")
        check_not_newer(version, path)
        _columns_of_older_schemas(conn, version)
    except SchemaTooNew as exc:
        conn.close()
        raise DatabaseUnavailable(str(exc)) from None
    except sqlite3.Error as exc:
        conn.close()
        raise DatabaseUnavailable(f"cannot read the request log {path}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


# What later migrations changed, for a log not yet upgraded (the CLI reads a file that no
# newer `arbstr serve` has opened): (version, column, how a row of an older schema reads as
# that version would have stored it), as the migrations themselves do it.
_UPGRADED_COLUMNS = (
    (2, "possibly_billed_sats", "NULL"),
    (3, "computed_cost_sats", "cost_sats"),
    (3, "cost_sats", "COALESCE(provider_cost_sats, cost_sats)"),
    (4, "api", "'chat'"),
    (5, "tier", "NULL"),
    (5, "complexity", "NULL"),
    (6, "escalated_from", "NULL"),
    (6, "escalation", "NULL"),
)


def _columns_of_older_schemas(conn: sqlite3.Connection, version: int) -> None:
    changed = {col: expr for v, col, expr in _UPGRADED_COLUMNS if version < v}
    if not changed:
        return
    stored = [str(row[1]) for row in conn.execute("PRAGMA main.table_info(requests)")]
    select = [f"{changed.pop(c)} AS {c}" if c in changed else c for c in stored]
    select += [f"{expr} AS {col}" for col, expr in changed.items()]
    # a TEMP view shadows the table for this connection only; the file is untouched
    conn.execute(f"CREATE TEMP VIEW requests AS SELECT {', '.join(select)} FROM main.requests")  # noqa: S608
