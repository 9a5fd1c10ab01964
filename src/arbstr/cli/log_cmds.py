"""``arbstr stats`` and ``requests``: the request log, as ``GET /v1/stats`` and
``GET /v1/requests`` show it. They read only ``[database]`` of the config: no provider key is
needed to look at the log."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from arbstr.cli.common import ConfigOpt, WideOpt, console, fail
from arbstr.config import resolve_config_path, resolve_db_path
from arbstr.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from arbstr import storage
    from arbstr.cli.tables import Fitted

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


def db_path(db: str | None, config: str | None) -> str:
    """The log's path; a config file is optional here unless --config or $ARBSTR_CONFIG names
    one."""
    path = resolve_config_path(config)
    explicit = config is not None or bool(os.environ.get("ARBSTR_CONFIG"))
    config_file: Path | None = path if explicit or path.is_file() else None
    try:
        return resolve_db_path(db, config_file, os.environ)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _read(
    path: str, kind: str, given: Mapping[str, str], by: str | None = None
) -> storage.Stats | storage.RequestsPage:
    """The log read as ``/v1/stats`` or ``/v1/requests`` would; errors name the option."""
    from arbstr import storage
    from arbstr.errors import DatabaseUnavailable, InvalidParameter

    try:
        if kind == "stats":
            return storage.read_stats(path, storage.parse_stats_params(given))
        return storage.read_requests(path, storage.parse_requests_params(given))
    except InvalidParameter as exc:
        name = "by" if by is not None and exc.param == "group_by" else exc.param
        name = "id" if name == "request_id" else name
        raise fail(f"--{name.replace('_', '-')}: {exc.reason}") from None
    except DatabaseUnavailable as exc:
        raise fail(exc.message) from None


def _print(out: Console, fitted: Fitted | None) -> None:
    if fitted is not None:
        out.print(fitted.table)
        if fitted.note:
            out.print(fitted.note, markup=False, style="dim")


def _report(
    db: str | None,
    config: str | None,
    params: dict[str, str | None],
    kind: str,
    as_json: bool,
    group_by: str | None = None,
    by: str | None = None,
    wide: bool = False,
) -> None:
    from arbstr import storage

    path = db_path(db, config)
    given = {k: v for k, v in params.items() if v is not None}
    result = _read(path, kind, given, by)
    if as_json:  # the very document the server sends, indented
        print(storage.encode_indented(result))
        return
    from arbstr.cli.tables import (
        escalation_table,
        provider_cost_table,
        requests_table,
        stats_table,
    )

    out = console()
    width = None if wide else out.width
    if isinstance(result, storage.Stats) and by is not None:
        from arbstr.cli.bars import chart

        print("\n".join(chart(result, by, min(out.width, 80))))
        return
    if wide:  # the tables keep their natural width: rich must not squeeze them
        out.width = 10_000
    if isinstance(result, storage.Stats):
        _print(out, stats_table(result, group_by, width))
        _print(out, escalation_table(result, width))
        if group_by != "provider":  # the per-provider view of charged vs computed
            by_provider = storage.parse_stats_params({**given, "group_by": "provider"})
            result = storage.read_stats(path, by_provider)
        _print(out, provider_cost_table(result, width))
    else:
        short = width is not None and width < 150
        _print(out, requests_table(result, short_ids=short, width=width))


def _lookup(path: str, given: dict[str, str], request_id: str) -> None:
    """``--id``: the one request whose id starts or ends with ``request_id``."""
    from arbstr import storage
    from arbstr.cli.lookup import detail, match_error

    page = _read(path, "requests", {**given, "request_id": request_id, "per_page": "10"})
    assert isinstance(page, storage.RequestsPage)
    problem = match_error(request_id, page)
    if problem is not None:
        raise fail(problem)
    for line in detail(page.data[0]):
        print(line)


def _follow(path: str, given: dict[str, str], latest: int, wide: bool) -> None:
    """``--follow``: until Ctrl-C, which ends it with a summary and exit status 0."""
    from arbstr import storage
    from arbstr.cli.follow import Tail, follow

    def read(params: Mapping[str, str]) -> storage.RequestsPage:
        page = _read(path, "requests", params)
        assert isinstance(page, storage.RequestsPage)
        return page

    def write(line: str) -> None:
        print(line, flush=True)

    tail = Tail(10_000 if wide else console().width)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a follow ends
        follow(read, given, write, tail, latest=latest)
    print(tail.summary(), flush=True)


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
    wide: WideOpt = False,
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
    _report(db, config, params, "stats", as_json, group_by, by, wide)


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
        str, typer.Option("--sort", help="timestamp | cost_sats | latency_ms | id (as logged)")
    ] = "timestamp",
    order: Annotated[str, typer.Option("--order", help="asc | desc")] = "desc",
    as_json: JsonOpt = False,
    wide: WideOpt = False,
    request_id: Annotated[
        str | None,
        typer.Option(
            "--id", help="the request whose id starts or ends with this (4+ characters), in full"
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="print new requests as they are logged, until Ctrl-C"),
    ] = False,
) -> None:
    """The request log, newest first (as GET /v1/requests; default all time)."""
    filters = _filters(range_, since, until, model, provider, policy, api, tier)
    params = {
        **filters,
        "success": None if success is None else str(success).lower(),
        "streaming": None if streaming is None else str(streaming).lower(),
    }
    if follow:
        if request_id is not None or as_json or range_ or since or until:
            raise fail("--follow: not with --id, --json, --range, --since or --until")
        path = db_path(db, config)
        given = {k: v for k, v in params.items() if v is not None}
        _follow(path, given, min(max(per_page, 1), 100), wide)
        return
    if request_id is not None:
        if as_json:
            params["request_id"] = request_id
        else:
            _lookup(db_path(db, config), {k: v for k, v in params.items() if v}, request_id)
            return
    params.update(page=str(page), per_page=str(per_page), sort=sort, order=order)
    _report(db, config, params, "requests", as_json, wide=wide)
