"""Reads of a PostgreSQL request log: a small connection pool per URL (kept for the life of
the process: ``/v1/stats`` and ``/v1/requests`` reuse its connections), each read in one
read-only transaction after a check of the schema version. Errors are
:class:`~arbstr.errors.DatabaseUnavailable` without the URL's password."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from arbstr.errors import DatabaseUnavailable
from arbstr.storage.dialect import POSTGRES, Db, Rows, to_pyformat
from arbstr.storage.location import display, scrub
from arbstr.storage.postgres.schema import schema_version
from arbstr.storage.schema import SchemaTooNew, check_not_newer, latest_version

T = TypeVar("T")

POOL_SIZE = 4
WAIT_S = 5.0  # for a connection, before the read answers "unavailable"
STATEMENT_TIMEOUT_MS = 30_000

_pools: dict[str, psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]]] = {}
_lock = threading.Lock()
_reached: set[str] = set()  # URLs a read has connected to (no probe needed any more)


class PgDb:
    """A :class:`~arbstr.storage.dialect.Db` over one psycopg connection."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.conn = conn
        self.dialect = POSTGRES

    def rows(self, sql: str, args: Sequence[object] = ()) -> Rows:
        return self.conn.execute(to_pyformat(sql), list(args)).fetchall()


def _pool(url: str) -> psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]]:
    with _lock:
        pool = _pools.get(url)
        if pool is None:
            pool = psycopg_pool.ConnectionPool(
                url,
                min_size=0,
                max_size=POOL_SIZE,
                kwargs={
                    "connect_timeout": int(WAIT_S),
                    "application_name": "arbstr-reads",
                    "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                },
                timeout=WAIT_S,
                check=psycopg_pool.ConnectionPool.check_connection,  # after a server restart
                open=True,
                name="arbstr-reads",
            )
            _pools[url] = pool
        return pool


def _probe(url: str) -> None:
    """Before the first pooled connection, one direct attempt: a server that refuses (a wrong
    password, no such database) is answered at once and with its reason, rather than after
    the pool's wait."""
    with psycopg.connect(url, connect_timeout=int(WAIT_S), application_name="arbstr-reads"):
        pass


def read(url: str, query: Callable[[Db], T]) -> T:
    """Run ``query`` on a pooled connection of ``url`` (blocking)."""
    name = display(url)
    try:
        pool = _pool(url)
        if url not in _reached:
            _probe(url)
            _reached.add(url)
        with pool.connection() as conn:
            conn.read_only = True
            with conn.transaction():
                version = schema_version(conn)
                if version == 0:
                    raise DatabaseUnavailable(f"{name} holds no arbstr request log (no schema)")
                check_not_newer(version, name)
                if version < latest_version():
                    raise DatabaseUnavailable(
                        f"{name}: request log schema {version} is older than this arbstr's"
                        f" ({latest_version()}); `arbstr serve` upgrades it"
                    )
                return query(PgDb(conn))
    except SchemaTooNew as exc:
        raise DatabaseUnavailable(str(exc)) from None
    except psycopg_pool.PoolTimeout:
        raise DatabaseUnavailable(
            f"cannot connect to the request log {name} within {WAIT_S:g} s"
        ) from None
    except psycopg.Error as exc:
        raise DatabaseUnavailable(
            f"cannot read the request log {name}: {scrub(str(exc).strip(), url)}"
        ) from None


@atexit.register
def close_pools() -> None:
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close(timeout=1.0)
