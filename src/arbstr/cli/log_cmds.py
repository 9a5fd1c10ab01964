"""``arbstr stats`` and ``requests``: the request log, as ``GET /v1/stats`` and
``GET /v1/requests`` show it. They read only ``[database]`` of the config: no provider key is
needed to look at the log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from arbstr.cli.common import ConfigOpt, console, fail
from arbstr.config import resolve_config_path, resolve_db_path
from arbstr.errors import ConfigError

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Request log, SQLite path or postgresql:// URL [default: $ARBSTR_DB,"
        " [database].url, $ARBSTR_DATABASE_URL, [database].path, ./arbstr.db]",
    ),
]
RangeOpt = Annotated[
    str | None,
    typer.Option("--range", help="last_1h | last_24h | last_7d | last_30d"),
]
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="ISO 8601, e.g. 2024-05-01T12:00:00Z (no offset = UTC)"),
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="ISO 8601 (inclusive)")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="only this model")]
ProviderOpt = Annotated[str | None, typer.Option("--provider", help="only this provider")]
PolicyOpt = Annotated[str | None, typer.Option("--policy", help="only this policy")]
ApiOpt = Annotated[
    str | None,
    typer.Option(
        "--api", help="only this API: chat | responses | messages | embeddings | completions"
    ),
]
TierOpt = Annotated[
    str | None, typer.Option("--tier", help="only this tier: economy | standard | frontier")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the /v1/… JSON instead of a table")]


def _db_path(db: str | None, config: str | None) -> str:
    """The log's path; a config file is optional here unless --config or $ARBSTR_CONFIG names
    one."""
    path = resolve_config_path(config)
    explicit = config is not None or bool(os.environ.get("ARBSTR_CONFIG"))
    config_file: Path | None = path if explicit or path.is_file() else None
    try:
        return resolve_db_path(db, config_file, os.environ)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _report(
    db: str | None,
    config: str | None,
    params: dict[str, str | None],
    kind: str,
    as_json: bool,
    group_by: str | None = None,
    by: str | None = None,
) -> None:
    from arbstr import storage
    from arbstr.errors import DatabaseUnavailable, InvalidParameter

    path = _db_path(db, config)
    given = {k: v for k, v in params.items() if v is not None}
    result: storage.Stats | storage.RequestsPage
    try:
        if kind == "stats":
            result = storage.read_stats(path, storage.parse_stats_params(given))
        else:
            result = storage.read_requests(path, storage.parse_requests_params(given))
    except InvalidParameter as exc:
        name = "by" if by is not None and exc.param == "group_by" else exc.param
        raise fail(f"--{name.replace('_', '-')}: {exc.reason}") from None
    except DatabaseUnavailable as exc:
        raise fail(exc.message) from None
    if as_json:  # the very document the server sends, indented
        print(storage.encode_indented(result))
        return
    from arbstr.cli.tables import (
        escalation_table,
        provider_cost_table,
        requests_table,
        stats_table,
    )

    if isinstance(result, storage.Stats) and by is not None:
        from arbstr.cli.bars import chart

        print("\n".join(chart(result, by, min(console().width, 80))))
        return
    out = console()
    if isinstance(result, storage.Stats):
        out.print(stats_table(result, group_by))
        escalated = escalation_table(result)
        if escalated is not None:
            out.print(escalated)
        if group_by != "provider":  # the per-provider view of charged vs computed
            by_provider = storage.parse_stats_params({**given, "group_by": "provider"})
            result = storage.read_stats(path, by_provider)
        table = provider_cost_table(result)
        if table is not None:
            out.print(table)
    else:
        out.print(requests_table(result, short_ids=out.width < 150))


def _filters(
    range_: str | None,
    since: str | None,
    until: str | None,
    model: str | None,
    provider: str | None,
    policy: str | None,
    api: str | None = None,
    tier: str | None = None,
) -> dict[str, str | None]:
    """The filters `stats` and `requests` share, named as the HTTP query parameters."""
    return {
        "range": range_,
        "since": since,
        "until": until,
        "model": model,
        "provider": provider,
        "policy": policy,
        "api": api,
        "tier": tier,
    }


def stats(
    db: DbOpt = None,
    config: ConfigOpt = None,
    range_: RangeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    model: ModelOpt = None,
    provider: ProviderOpt = None,
    policy: PolicyOpt = None,
    api: ApiOpt = None,
    tier: TierOpt = None,
    group_by: Annotated[
        str | None, typer.Option("--group-by", "-g", help="model | provider | policy | api | tier")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option("--by", help="hour | day | week: sats per UTC bucket as a bar chart"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Requests, cost and latency from the request log (as GET /v1/stats; default last 7 days)."""
    if by is not None and group_by is not None:
        raise fail("--by: give either --by or --group-by, not both")
    if by is not None and by not in ("hour", "day", "week"):
        raise fail(f"--by: expected one of hour, day, week, got {by!r}")
    params = {
        **_filters(range_, since, until, model, provider, policy, api, tier),
        "group_by": by or group_by,
    }
    _report(db, config, params, "stats", as_json, group_by, by)


def requests(
    db: DbOpt = None,
    config: ConfigOpt = None,
    range_: RangeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    model: ModelOpt = None,
    provider: ProviderOpt = None,
    policy: PolicyOpt = None,
    api: ApiOpt = None,
    tier: TierOpt = None,
    success: Annotated[
        bool | None, typer.Option("--success/--failed", help="only successes / only failures")
    ] = None,
    streaming: Annotated[
        bool | None,
        typer.Option("--streaming/--non-streaming", help="only streams / only non-streams"),
    ] = None,
    page: Annotated[int, typer.Option("--page", help="1, 2, …")] = 1,
    per_page: Annotated[int, typer.Option("--per-page", help="1 to 100")] = 20,
    sort: Annotated[
        str, typer.Option("--sort", help="timestamp | cost_sats | latency_ms")
    ] = "timestamp",
    order: Annotated[str, typer.Option("--order", help="asc | desc")] = "desc",
    as_json: JsonOpt = False,
) -> None:
    """The request log, newest first (as GET /v1/requests; default all time)."""
    params = {
        **_filters(range_, since, until, model, provider, policy, api, tier),
        "success": None if success is None else str(success).lower(),
        "streaming": None if streaming is None else str(streaming).lower(),
        "page": str(page),
        "per_page": str(per_page),
        "sort": sort,
        "order": order,
    }
    _report(db, config, params, "requests", as_json)
