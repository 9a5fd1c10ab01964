"""``arbstr route FILE|-``: the ``POST /v1/route`` dry run offline, against the config (its
configured prices; ``discover = true`` providers' fetched now, as ``arbstr providers``)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from arbstr.cli.common import ConfigOpt, fail, load, warn

WIDTH = 80


def route(
    file: Annotated[str, typer.Argument(help="Request body (JSON) file, or - for stdin")],
    api: Annotated[
        str | None,
        typer.Option(help="chat|responses|messages|embeddings|completions [default: guessed]"),
    ] = None,
    policy: Annotated[str | None, typer.Option(help="As the X-Arbstr-Policy header")] = None,
    tier: Annotated[str | None, typer.Option(help="As the X-Arbstr-Tier header")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the endpoint's JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """Where a request would be routed, and why, without sending it to any provider."""
    import json

    from arbstr.errors import ArbstrError
    from arbstr.server.dryrun import dry_run, handlers_for, pick
    from arbstr.server.gateway import Gateway

    try:
        body = sys.stdin.buffer.read() if file == "-" else open(file, "rb").read()  # noqa: SIM115
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}") from None
    cfg = load(config)
    gw = Gateway(cfg)
    if gw.prices.enabled:
        from arbstr.server.runner import run

        run(_refresh(gw))
    handlers = handlers_for(gw)
    try:
        answer = dry_run(
            pick(handlers, api, body), body, policy, tier.strip().lower() if tier else None
        )
    except ArbstrError as err:
        err.message = gw.redactor.text(err.message)
        if as_json:
            print(err.body().decode())
            raise typer.Exit(1) from None
        raise fail(f"{err.status} {err.code}: {err.message}") from None
    if as_json:
        print(json.dumps(answer, indent=2))
    else:
        print("\n".join(render(answer)))
    warn(cfg)


async def _refresh(gw: Any) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        await gw.prices.refresh_all(session, gw.discovery_timeout_s)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def render(a: dict[str, Any]) -> list[str]:
    """The answer as lines of at most 80 columns: the decision, then one line per candidate."""
    score = "-" if a["complexity"] is None else f"{a['complexity']:.2f}"
    reasons = f" ({', '.join(a['reasons'])})" if a["reasons"] else ""
    lines = [
        f"api {a['api']}, policy {a['policy']}, tier {a['tier'] or '-'}",
        f"complexity {score}{reasons}",
        f"model {a['requested_model']} -> {a['model']}"
        f" (~{a['est_input_tokens']} in, ~{a['est_output_tokens']} out tokens)",
    ]
    if a.get("tier_reason"):
        lines.append(f"tier: {a['tier_reason']}")
    lines = [_cut(line, WIDTH) for line in lines]
    lines.append("")
    head = f"{'#':>2}  {'provider':<16} {'model':<28} {'est. sats':>12}  skipped"
    lines.append(head)
    rank = 0
    for c in a["candidates"]:
        skipped = c["skipped"]
        if skipped is None:
            rank += 1
        note = skipped or ("funds insufficient" if c["funds"] else "")
        num = str(rank) if skipped is None else "-"
        line = (
            f"{num:>2}  {_cut(c['provider'], 16):<16} {_cut(c['model'], 28):<28}"
            f" {c['est_cost_sats']:>12.6f}  {note}"
        )
        lines.append(_cut(line.rstrip(), WIDTH))
    return lines
