"""The request log on SQLite or PostgreSQL: schema migrations, the writer thread, and the
read queries."""

from arbstr.storage.params import (
    RequestsQuery,
    StatsQuery,
    parse_requests_params,
    parse_stats_params,
)
from arbstr.storage.payloads import RequestsPage, Stats, encode, encode_indented
from arbstr.storage.queries import read_requests, read_stats, read_with
from arbstr.storage.schema import SchemaTooNew, latest_version, migrate
from arbstr.storage.store import Store

__all__ = [
    "RequestsPage",
    "RequestsQuery",
    "SchemaTooNew",
    "Stats",
    "StatsQuery",
    "Store",
    "encode",
    "encode_indented",
    "latest_version",
    "migrate",
    "parse_requests_params",
    "parse_stats_params",
    "read_requests",
    "read_stats",
    "read_with",
]
