"""The request log: SQLite schema migrations, the writer thread, and the read queries."""

from arbstr.storage.queries import (
    RequestsQuery,
    StatsQuery,
    parse_requests_params,
    parse_stats_params,
    read_requests,
    read_stats,
)
from arbstr.storage.schema import SchemaTooNew, latest_version, migrate
from arbstr.storage.store import Store

__all__ = [
    "RequestsQuery",
    "SchemaTooNew",
    "StatsQuery",
    "Store",
    "latest_version",
    "migrate",
    "parse_requests_params",
    "parse_stats_params",
    "read_requests",
    "read_stats",
]
