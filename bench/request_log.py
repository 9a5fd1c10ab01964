"""The request log's throughput and read times on SQLite and PostgreSQL.

    python -m bench.request_log [--rows N] [--url postgresql://…]

Writes N records through :class:`arbstr.storage.Store` (submit all, then close: the writer
thread's rows per second), then times ``/v1/stats`` queries over them. Without ``--url`` it
starts a throwaway PostgreSQL server as the tests do (tests/pg_server.py: Debian's binaries,
fsync off), so the PostgreSQL figures are the writer's and the queries' cost, not a disk's.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from arbstr.records import RequestRecord
from arbstr.storage import Store, read_requests, read_stats
from arbstr.storage.params import RequestsQuery, parse_stats_params

_TESTS = Path(__file__).resolve().parent.parent / "tests"


def records(n: int, now: datetime) -> list[RequestRecord]:
    rnd = random.Random(7)
    out = []
    for i in range(n):
        at = now - timedelta(seconds=rnd.uniform(0, 6.5 * 86400))
        out.append(
            RequestRecord(
                request_id=str(uuid.UUID(int=rnd.getrandbits(128))),
                timestamp=at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
                model=rnd.choice(["gpt-4o", "gpt-4o-mini", "claude-3.5-sonnet", "llama-3"]),
                provider=rnd.choice(["alpha", "beta", "gamma"]),
                policy=rnd.choice(["default", "code"]),
                streaming=i % 3 == 0,
                input_tokens=rnd.randint(1, 4000),
                output_tokens=rnd.randint(1, 800),
                cost_msats=rnd.randint(1, 50_000),
                provider_cost_msats=None,
                latency_ms=rnd.randint(50, 4000),
                ttft_ms=None,
                stream_duration_ms=None,
                success=i % 20 != 0,
                error_status=None if i % 20 else 502,
                error_message=None if i % 20 else "upstream error",
            )
        )
    return out


def write(location: str, recs: list[RequestRecord]) -> float:
    """Rows per second the writer thread stores (submit everything, then close)."""
    store = Store.open(location, queue_size=len(recs) + 1)
    t0 = time.perf_counter()
    for r in recs:
        store.submit(r)
    store.close(timeout=600)
    elapsed = time.perf_counter() - t0
    assert store.written == len(recs), (store.written, store.dropped)
    return len(recs) / elapsed


def time_reads(location: str, now: datetime) -> dict[str, float]:
    """Median of 5 runs of each read, in ms."""
    cases = {
        "stats last_7d": {"range": "last_7d"},
        "stats last_24h": {"range": "last_24h"},
        "stats last_7d by provider": {"range": "last_7d", "group_by": "provider"},
        "stats last_7d provider=beta": {"range": "last_7d", "provider": "beta"},
        "stats last_7d by day": {"range": "last_7d", "group_by": "day"},
    }
    out: dict[str, float] = {}
    for name, params in cases.items():
        q = parse_stats_params(params, now=now)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            read_stats(location, q)
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = sorted(times)[2]
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        read_requests(location, RequestsQuery(page=3, per_page=100))
        times.append((time.perf_counter() - t0) * 1000)
    out["requests page 3"] = sorted(times)[2]
    return out


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    sys.path.insert(0, str(_TESTS))
    from pg_server import running_server

    with running_server() as server:
        if server is None:
            raise SystemExit("no PostgreSQL binaries (make postgres installs them), or --url")
        yield server.create_database()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--url", help="a PostgreSQL database to use (its tables are written)")
    args = ap.parse_args(argv)
    now = datetime.now(UTC)
    recs = records(args.rows, now)
    with tempfile.TemporaryDirectory() as tmp, postgres(args.url) as url:
        for name, location in (("sqlite", str(Path(tmp) / "log.db")), ("postgres", url)):
            rate = write(location, recs)
            print(f"{name}: wrote {len(recs):,} rows at {rate:,.0f} rows/s")
            for case, ms in time_reads(location, now).items():
                print(f"{name}:   {case}: {ms:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
