"""``arbstr budgets``: each ``[[budgets]]`` entry with what the request log says it has used
in its current window, its limit, what is left and when it resets (as ``GET /v1/budgets``
shows them, less the requests a running server has in flight)."""

from __future__ import annotations

import msgspec
import typer

from arbstr.cli.common import ConfigOpt, WideOpt, console, esc, fail, load, print_fitted
from arbstr.cli.log_cmds import DbOpt, JsonOpt, db_path


def budgets(
    db: DbOpt = None, config: ConfigOpt = None, wide: WideOpt = False, as_json: JsonOpt = False
) -> None:
    """Budgets: use in the current UTC day/week/month, limit, left, reset."""
    from arbstr.cli.tables import SIMPLE, Col
    from arbstr.errors import DatabaseUnavailable
    from arbstr.routing.budgets import BudgetBook
    from arbstr.server.budgets import budgets_payload
    from arbstr.storage.spend import read_spent

    cfg = load(config)
    book = BudgetBook(cfg.budgets)
    if not book.enabled:
        console().print(esc(f"no [[budgets]] in {cfg.source}"))
        raise typer.Exit(0)
    try:
        book.load(read_spent(db_path(db, config), book.earliest_start()))
    except DatabaseUnavailable as exc:
        raise fail(exc.message) from None
    payload = budgets_payload(book)
    if as_json:
        print(msgspec.json.format(msgspec.json.encode(payload), indent=2).decode())
        return
    cols = (
        Col("budget", 0, least=8),
        Col("scope", 3, least=10),
        Col("action", 5),
        Col("used", 2, right=True),
        Col("limit", 4, right=True),
        Col("left", 1, right=True),
        Col("resets", 6),
    )
    rows: list[tuple[list[str], str | None]] = []
    for s in book.states:
        b = s.budget
        left = max(0, s.remaining_msats)
        cells = [
            esc(b.name),
            esc(b.scope),
            b.action,
            f"{s.used_msats / 1000:,.3f}",
            f"{b.limit_msats / 1000:,.3f}/{b.per}",
            "[bold red]0[/]" if left == 0 else f"{left / 1000:,.3f}",
            s.reset.strftime("%Y-%m-%d"),
        ]
        rows.append((cells, None))
    print_fitted(cols, rows, wide, SIMPLE)
    console().print("in sats; windows are UTC; a running server's GET /v1/budgets also counts")
    console().print("the requests it has in flight")
