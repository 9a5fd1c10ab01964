"""``make bench``: arbstr's added cost, measured in one run, direct vs through the proxy.

The fast mock upstream (``bench/upstream.py``) and every load generator share the *load* core;
the proxy — a real ``arbstr serve`` process with info-level request logging, SQLite request
logging when the build supports ``--db``, four providers and three policy rules — runs alone on
the *proxy* core (``taskset``). Each measure is taken against the upstream directly and
through arbstr, and the difference is the proxy's cost:

1. warm-up (sequential requests, then wrk at the throughput concurrency);
2. non-streaming latency at concurrency 1 (alternating direct / proxied, see ``clients.py``);
3. streams at concurrency 10: time to the first SSE chunk and per-chunk relay delay;
4. non-streaming throughput at concurrency 64 with wrk, direct, then through arbstr in
   slices until the proxy has served ``--requests`` requests in total, sampling its RSS.

Prints a Markdown table and writes ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.clients import (
    LatencySample,
    StreamSample,
    http_request,
    latency_pairs,
    run_streams_sync,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"

# Budget (issue: "Benchmark and performance budget").
BUDGET_P50_MS = 0.5
BUDGET_P99_MS = 2.0
BUDGET_RPS = 2500.0
BUDGET_TTFB_MS = 1.0
BUDGET_RSS_MB = 100.0
BUDGET_OBSERVE_US = 2.0  # what counting one request in the metrics may cost
DISTURBED_STEAL_PCT = 10.0  # above this average steal a run is reported as disturbed
RSS_GROWTH_TOLERANCE_MB = 5.0  # "no growth after warm-up", allowing allocator noise


@dataclass(frozen=True, slots=True)
class Plan:
    latency_pairs: int = 10_000
    latency_warmup: int = 500
    warmup_s: int = 4
    concurrency: int = 64
    wrk_direct_s: int = 5
    wrk_slice_s: int = 10
    total_requests: int = 100_000
    max_slices: int = 12
    streams: int = 300
    stream_concurrency: int = 10
    first_byte_ms: float = 20.0
    chunk_ms: float = 10.0
    chunks: int = 20


QUICK = Plan(
    latency_pairs=2_000,
    latency_warmup=200,
    warmup_s=2,
    wrk_direct_s=2,
    wrk_slice_s=3,
    total_requests=10_000,
    max_slices=4,
    streams=60,
)

USER_TEXT = (
    "Implement a function that merges two sorted linked lists into one sorted list, "
    "in Python, with type hints and a short docstring."
)


def request_body(stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a careful senior Python engineer."},
            {"role": "user", "content": USER_TEXT},
        ],
        "max_tokens": 256,
        "temperature": 0.2,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


PROVIDERS: tuple[tuple[str, str, float, float, float], ...] = (
    # name, models (TOML array), input_rate, output_rate, base_fee (sats)
    ("alpha", '["gpt-4o", "gpt-4o-mini"]', 5.0, 15.0, 0.0),
    ("beta", '["gpt-4o", "claude-3.5-sonnet"]', 8.0, 24.0, 1.0),
    ("gamma", "[]", 10.0, 30.0, 0.5),
    ("delta", '["gpt-4o", "gpt-4o-mini", "claude-3.5-sonnet"]', 20.0, 60.0, 0.0),
)


def scrape_metrics(port: int) -> dict[str, Any]:
    """One ``GET /metrics``: how long it took and the requests it counted."""
    from prometheus_client.parser import text_string_to_metric_families

    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    ms = (time.perf_counter() - t0) * 1000.0
    counted = sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "arbstr_requests"
        for sample in family.samples
        if sample.name == "arbstr_requests_total"
    )
    return {"scrape_ms": round(ms, 2), "requests_counted": int(counted), "scrape_bytes": len(text)}


def proxy_env() -> dict[str, str]:
    """The environment ``arbstr serve`` runs in: no ``ARBSTR_*`` of the caller's, the bench
    providers' keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBSTR_")}
    for name, *_ in PROVIDERS:
        env[f"ARBSTR_{name.upper()}_API_KEY"] = f"sk-bench-{name}-0123456789abcdef"
    return env


def serve_argv(cfg: Path, port: int, db: Path | None) -> list[str]:
    """``arbstr serve`` on ``port`` with ``cfg``, logging at info, the request log at ``db``."""
    argv = [sys.executable, "-m", "arbstr", "serve", "-c", str(cfg)]
    argv += ["--listen", f"{HOST}:{port}", "--log-level", "info"]
    return argv + (["--db", str(db)] if db is not None else [])


def upstream_argv(port: int, **timing: float) -> list[str]:
    """The mock upstream (``bench/upstream.py``) on ``port``; ``timing`` in its options'
    names (``first_byte_ms=50`` is ``--first-byte-ms 50``)."""
    argv = [sys.executable, "-m", "bench.upstream", "--port", str(port)]
    for name, value in timing.items():
        argv += [
            "--" + name.replace("_", "-"),
            str(value) if isinstance(value, int) else f"{value:g}",
        ]
    return argv


def config_toml(upstream_port: int) -> str:
    """Four providers on the one mock upstream (distinct URL paths and prices) and three
    policy rules; the benchmark's request matches the last rule by keyword."""
    out = [
        "[server]",
        "request_timeout_s = 30",
        "connect_timeout_s = 5",
        "stream_idle_timeout_s = 30",
        "",
        "[retry]",
        "max_attempts_per_provider = 2",
        "fallback = true",
        "",
        "[metrics]",  # on: every row counted as a team's deployment would (scraped at the end)
        "enabled = true",
        "",
    ]
    for name, models, inp, outp, fee in PROVIDERS:
        out += [
            "[[providers]]",
            f'name = "{name}"',
            f'url = "http://{HOST}:{upstream_port}/{name}/v1"',
            f"models = {models}",
            f"input_rate = {inp}",
            f"output_rate = {outp}",
            f"base_fee = {fee}",
            "",
        ]
    out += [
        '[providers.model_rates."gpt-4o-mini"]',
        "input_rate = 15",
        "output_rate = 45",
        "",
        "[policies]",
        'default_strategy = "lowest_cost"',
        "",
        "[[policies.rules]]",
        'name = "cheap"',
        'allowed_models = ["gpt-4o-mini"]',
        'keywords = ["summarize", "tl;dr", "translate"]',
        "",
        "[[policies.rules]]",
        'name = "fast"',
        'strategy = "lowest_latency"',
        'keywords = ["urgent", "quickly", "asap"]',
        "",
        "[[policies.rules]]",
        'name = "code_generation"',
        'allowed_models = ["claude-3.5-sonnet", "gpt-4o"]',
        'strategy = "lowest_cost"',
        "max_sats_per_1k_output = 50",
        'keywords = ["code", "function", "implement"]',
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# small helpers


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """Percentile ``q`` (0-100) with linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port} within {timeout_s:g} s")


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def mb(kb: int) -> float:
    return round(kb / 1024.0, 1)


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk not found: installing it with apt-get (Debian package 'wrk')")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
            done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                sys.exit(f"bench: {' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
        wrk = shutil.which("wrk")
        if wrk:
            return wrk
    sys.exit("bench: wrk is required (Debian/Ubuntu: sudo apt-get install wrk)")


@dataclass(frozen=True, slots=True)
class Pinning:
    proxy: str | None  # cpu list for taskset, None when not pinning
    load: str | None

    def wrap(self, cpus: str | None, argv: list[str]) -> list[str]:
        return ["taskset", "-c", cpus, *argv] if cpus is not None else argv

    def pin_this_process(self) -> None:
        """This process (it runs the Python clients) on the load CPU, when pinning."""
        if self.load is not None:
            os.sched_setaffinity(0, {int(self.load)})

    def describe(self) -> str:
        if self.proxy is None:
            return "not pinned (fewer than 2 CPUs or taskset missing)"
        return (
            f"proxy on CPU {self.proxy}; mock upstream, wrk and the Python clients on CPU"
            f" {self.load}"
        )


# the CPUs this run may use, read before any phase pins this process to its load CPU: a later
# phase (the many-streams row) that read its own affinity then would see one CPU, pin nothing,
# and run the proxy on the load's core, which its subprocesses inherit
RUN_CPUS = tuple(sorted(os.sched_getaffinity(0)))


def choose_pinning() -> Pinning:
    cpus = RUN_CPUS
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return Pinning(None, None)
    return Pinning(str(cpus[0]), str(cpus[1]))


@dataclass(slots=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    errors: int
    error_detail: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def run_wrk(
    wrk: str, pin: Pinning, url: str, body_file: Path, conns: int, seconds: int
) -> WrkResult:
    argv = pin.wrap(
        pin.load,
        [
            wrk,
            "-t1",
            f"-c{conns}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "--latency",
            "-s",
            str(BENCH / "post.lua"),
            url,
        ],
    )
    env = {**os.environ, "ARBSTR_BENCH_BODY": str(body_file)}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    d = json.loads(line.split(" ", 1)[1])
    dur = d["duration_us"] / 1e6
    errors = dict(d["errors"])
    lat = d["latency_us"]
    return WrkResult(
        requests=d["requests"],
        duration_s=round(dur, 3),
        rps=round(d["requests"] / dur, 1),
        errors=sum(errors.values()),
        error_detail=errors,
        p50_ms=lat["p50"] / 1000.0,
        p90_ms=lat["p90"] / 1000.0,
        p99_ms=lat["p99"] / 1000.0,
        max_ms=lat["max"] / 1000.0,
    )


@contextlib.contextmanager
def process(
    argv: list[str], *, env: dict[str, str] | None, stderr_to: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with open(stderr_to, "wb") as err:
        proc = subprocess.Popen(argv, stdout=err, stderr=err, env=env, cwd=ROOT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def machine(wrk: str, pin: Pinning) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("arbstr", "uvicorn", "uvloop", "httptools", "aiohttp", "msgspec"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "absent"
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "wrk": (wrk_version.stdout + wrk_version.stderr).split("\n")[0].split(" Copyright")[0],
        "commit": commit or "unknown",
        "pinning": pin.describe(),
    }


_CALIBRATE = """
import time
def f(n):
    t = 0
    for i in range(n):
        t += i * i % 7
    return t
best = 1e9
for _ in range(5):
    t0 = time.perf_counter(); f(200_000); best = min(best, time.perf_counter() - t0)
print(best / 200_000 * 1e9)
"""


def calibrate(pin: Pinning) -> float:
    """ns per iteration of a fixed pure-Python loop on the proxy's CPU (best of 5): how fast
    the CPU is right now. On a shared VM it drifts from run to run; compare runs with it."""
    argv = pin.wrap(pin.proxy, [sys.executable, "-c", _CALIBRATE])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return round(float(out), 1)


def supports_db() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "arbstr", "serve", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "--db" in out.stdout


def first_exchange(port: int) -> dict[str, str]:
    """One proxied request, to check routing before measuring: its arbstr headers."""
    with socket.create_connection((HOST, port)) as s:
        s.sendall(http_request(CHAT_PATH, request_body(False)))
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    if " 200 " not in head[0] + " ":
        raise RuntimeError(f"proxy answered {head[0]!r} to the benchmark request")
    out = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        if k.lower().startswith("x-arbstr-"):
            out[k.lower()] = v.strip()
    return out


class CpuMeter:
    """CPU time used by the whole machine vs by the benchmark's own processes: the difference
    is other work on the machine that disturbed the measurement (plus the hypervisor's steal).

    Machine time is user + nice + system from ``/proc/stat`` (interrupt time excluded: the
    loopback network stack runs there for the benchmark's own traffic); ours is the proxy's
    and the upstream's utime + stime, this process's and its waited-for children's (wrk)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self._start = self._read()

    @staticmethod
    def _machine() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[0] + v[1] + v[2], v[7] if len(v) > 7 else 0

    def _ours(self) -> float:
        tick = float(os.sysconf("SC_CLK_TCK"))
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        t = os.times()
        return total + t.user + t.system + t.children_user + t.children_system

    def _read(self) -> tuple[float, int, int, float]:
        busy, steal = self._machine()
        return time.monotonic(), busy, steal, self._ours()

    def lap(self) -> dict[str, float]:
        """Since the last lap (or creation): other processes' and steal time, % of one CPU."""
        now = self._read()
        t0, busy0, steal0, ours0 = self._start
        self._start = now
        tick = float(os.sysconf("SC_CLK_TCK"))
        wall = max(now[0] - t0, 1e-9)
        other = max(0.0, (now[1] - busy0) / tick - (now[3] - ours0))
        return {
            "seconds": round(wall, 1),
            "other_cpu_pct": round(100.0 * other / wall, 1),
            "steal_pct": round(100.0 * (now[2] - steal0) / tick / wall, 1),
        }


# --------------------------------------------------------------------------------------------
# the run


def measure(plan: Plan, out_path: Path) -> dict[str, Any]:
    started = time.monotonic()
    wrk = ensure_wrk()
    pin = choose_pinning()
    pin.pin_this_process()
    info = machine(wrk, pin)
    info["cpu_speed_ns_per_loop_start"] = calibrate(pin)
    log(
        f"{info['cpu']}, {info['cpus']} CPUs; {info['pinning']};"
        f" CPU speed {info['cpu_speed_ns_per_loop_start']} ns/loop"
    )

    tmp = Path(tempfile.mkdtemp(prefix="arbstr-bench-"))
    up_port, px_port = free_port(), free_port()
    cfg = tmp / "config.toml"
    cfg.write_text(config_toml(up_port))
    cfg.chmod(0o600)
    bodies = {"json": tmp / "body.json"}
    bodies["json"].write_bytes(request_body(False))
    db = tmp / "arbstr.db"
    with_db = supports_db()
    env = proxy_env()
    up_argv = pin.wrap(
        pin.load,
        upstream_argv(
            up_port, first_byte_ms=plan.first_byte_ms, chunk_ms=plan.chunk_ms, chunks=plan.chunks
        ),
    )
    px_argv = pin.wrap(pin.proxy, serve_argv(cfg, px_port, db if with_db else None))
    proxy_log = tmp / "proxy.log"
    direct_path = f"/alpha{CHAT_PATH}"
    direct_addr = (HOST, up_port)
    proxy_addr = (HOST, px_port)
    direct_url = f"http://{HOST}:{up_port}{direct_path}"
    proxy_url = f"http://{HOST}:{px_port}{CHAT_PATH}"
    rss: dict[str, Any] = {"checkpoints": []}
    proxied = 0  # requests served by the proxy so far

    def checkpoint(label: str, pid: int) -> None:
        r = rss_kb(pid)
        rss["checkpoints"].append({"after": label, "requests": proxied, "rss_mb": mb(r["VmRSS"])})
        log(f"proxy RSS {mb(r['VmRSS'])} MB after {label} ({proxied} requests)")

    noise: dict[str, dict[str, float]] = {}
    with (
        process(up_argv, env=None, stderr_to=tmp / "upstream.log") as up,
        process(px_argv, env=env, stderr_to=proxy_log) as px,
    ):
        wait_http(up_port, 10, up)
        wait_http(px_port, 30, px)
        routed = first_exchange(px_port)
        proxied += 1
        log(
            f"routing check: provider={routed.get('x-arbstr-provider')}"
            f" model={routed.get('x-arbstr-model')} policy={routed.get('x-arbstr-policy')}"
        )
        checkpoint("start-up", px.pid)
        cpu = CpuMeter([up.pid, px.pid])
        json_body = bodies["json"].read_bytes()

        log("warm-up")
        latency_pairs(
            direct_addr, direct_path, proxy_addr, json_body, pairs=0, warmup=plan.latency_warmup
        )
        proxied += plan.latency_warmup
        warm = run_wrk(wrk, pin, proxy_url, bodies["json"], plan.concurrency, plan.warmup_s)
        proxied += warm.requests
        checkpoint("warm-up", px.pid)
        rss_warm = rss_kb(px.pid)["VmRSS"]
        noise["warm-up"] = cpu.lap()

        log(f"latency, concurrency 1: {plan.latency_pairs} direct/proxied pairs")
        lat = latency_pairs(
            direct_addr, direct_path, proxy_addr, json_body, pairs=plan.latency_pairs, warmup=50
        )
        proxied += plan.latency_pairs + 50
        noise["latency c=1"] = cpu.lap()

        stream_body = request_body(True)
        # the time one stream takes, spread over the clients: evenly spaced arrivals
        steady_stagger_s = (
            (plan.first_byte_ms + plan.chunks * plan.chunk_ms)
            / 1000.0
            / max(1, plan.stream_concurrency)
        )
        samples: dict[str, tuple[StreamSample, StreamSample]] = {}
        for pattern, stagger in (("steady", steady_stagger_s), ("burst", 0.0)):
            log(
                f"streams, concurrency {plan.stream_concurrency}, {pattern} arrivals:"
                f" {plan.streams} each way"
            )
            d, p = (
                run_streams_sync(
                    addr,
                    path,
                    stream_body,
                    streams=plan.streams,
                    concurrency=plan.stream_concurrency,
                    expected_chunks=plan.chunks,
                    stagger_s=stagger,
                )
                for addr, path in ((direct_addr, direct_path), (proxy_addr, CHAT_PATH))
            )
            samples[pattern] = (d, p)
        s_direct, s_proxy = samples["steady"]
        b_direct, b_proxy = samples["burst"]
        proxied += 2 * plan.streams
        noise["streams"] = cpu.lap()

        log(f"throughput, concurrency {plan.concurrency}: direct, {plan.wrk_direct_s} s")
        t_direct = run_wrk(
            wrk, pin, direct_url, bodies["json"], plan.concurrency, plan.wrk_direct_s
        )
        slices: list[WrkResult] = []
        # at least one slice: a warm-up that served the whole total must not leave the row empty
        while not slices or (proxied < plan.total_requests and len(slices) < plan.max_slices):
            n = len(slices) + 1
            log(f"throughput, concurrency {plan.concurrency}: via arbstr, slice {n}")
            w = run_wrk(wrk, pin, proxy_url, bodies["json"], plan.concurrency, plan.wrk_slice_s)
            slices.append(w)
            proxied += w.requests
            checkpoint(f"throughput slice {n}", px.pid)
        noise["throughput"] = cpu.lap()
        scraped = scrape_metrics(px_port)
        final = rss_kb(px.pid)
        px.send_signal(signal.SIGTERM)
        try:
            exit_code: int | None = px.wait(timeout=30)
        except subprocess.TimeoutExpired:
            exit_code = None

    rss.update(
        {
            "after_warmup_mb": mb(rss_warm),
            "final_mb": mb(final["VmRSS"]),
            "peak_mb": mb(final["VmHWM"]),
            "growth_after_warmup_mb": mb(final["VmRSS"] - rss_warm),
            "requests": proxied,
        }
    )
    info["cpu_speed_ns_per_loop_end"] = calibrate(pin)
    log_text = proxy_log.read_text(errors="replace")
    chat_lines = log_text.count(" chat ok ")
    db_rows: int | None = None
    if with_db and db.exists():
        with contextlib.closing(sqlite3.connect(db)) as conn:
            db_rows = conn.execute("SELECT count(*) FROM requests").fetchone()[0]

    results = build_results(
        plan=plan,
        info=info,
        lat=lat,
        s_direct=s_direct,
        s_proxy=s_proxy,
        b_direct=b_direct,
        b_proxy=b_proxy,
        t_direct=t_direct,
        slices=slices,
        warm=warm,
        rss=rss,
        routed=routed,
        noise=noise,
        logging={
            "level": "info",
            "request_log_lines": chat_lines,
            "error_lines": log_text.count(" ERROR "),
            "warning_lines": log_text.count(" WARNING "),
            "sqlite": str(db) if with_db else None,
            "sqlite_rows": db_rows,
            "proxy_exit_code": exit_code,
        },
        wall_s=time.monotonic() - started,
    )
    results["metrics"] = {**scraped, "sqlite_rows": db_rows}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return results


NOISY_PCT = 10.0  # other processes above this share of a CPU: the numbers are not reliable


def summarize_noise(noise: dict[str, dict[str, float]]) -> dict[str, Any]:
    secs = sum(n["seconds"] for n in noise.values()) or 1.0
    avg = sum(n["other_cpu_pct"] * n["seconds"] for n in noise.values()) / secs
    steal = sum(n["steal_pct"] * n["seconds"] for n in noise.values()) / secs
    worst = max(noise.items(), key=lambda kv: kv[1]["other_cpu_pct"])
    return {
        "other_cpu_pct_avg": round(avg, 1),
        "steal_pct_avg": round(steal, 1),
        "worst_phase": worst[0],
        "worst_phase_other_cpu_pct": worst[1]["other_cpu_pct"],
        "phases": noise,
        "quiet": worst[1]["other_cpu_pct"] <= NOISY_PCT,
    }


def _r(x: float, nd: int = 3) -> float:
    return round(x, nd) if not math.isnan(x) else x


def build_results(
    *,
    plan: Plan,
    info: dict[str, Any],
    lat: LatencySample,
    s_direct: StreamSample,
    s_proxy: StreamSample,
    b_direct: StreamSample,
    b_proxy: StreamSample,
    t_direct: WrkResult,
    slices: list[WrkResult],
    warm: WrkResult,
    rss: dict[str, Any],
    routed: dict[str, str],
    noise: dict[str, dict[str, float]],
    logging: dict[str, Any],
    wall_s: float,
) -> dict[str, Any]:
    d_ms = [x / 1000.0 for x in lat.direct_us]
    p_ms = [x / 1000.0 for x in lat.proxy_us]
    latency: dict[str, Any] = {
        "pairs": len(p_ms),
        "direct_ms": {q: _r(pct(d_ms, v)) for q, v in (("p50", 50), ("p90", 90), ("p99", 99))},
        "proxy_ms": {q: _r(pct(p_ms, v)) for q, v in (("p50", 50), ("p90", 90), ("p99", 99))},
        "errors": {"direct": lat.errors_direct, "proxy": lat.errors_proxy},
        "proxy_reported_overhead_ms_p50": _r(pct(lat.proxy_overhead_header_ms, 50), 2),
    }
    latency["added_ms"] = {
        q: _r(latency["proxy_ms"][q] - latency["direct_ms"][q]) for q in ("p50", "p90", "p99")
    }
    total_req = sum(s.requests for s in slices)
    total_s = sum(s.duration_s for s in slices)
    throughput: dict[str, Any] = {
        "concurrency": plan.concurrency,
        "direct": asdict(t_direct),
        "proxy": {
            "requests": total_req,
            "duration_s": round(total_s, 2),
            "rps": round(total_req / total_s, 1) if total_s else 0.0,
            "errors": sum(s.errors for s in slices),
            "slice_rps": [s.rps for s in slices],
            "p50_ms_median_slice": _r(pct([s.p50_ms for s in slices], 50)),
            "p99_ms_worst_slice": max((s.p99_ms for s in slices), default=math.nan),
            "warmup": asdict(warm),
        },
    }

    def stream_stats(s: StreamSample) -> dict[str, Any]:
        return {
            "streams": s.streams,
            "ok": s.ok,
            "errors": s.errors,
            "error_messages": s.error_messages,
            "chunks": s.chunks,
            "batched_http_chunks": s.batched_http_chunks,
            "ttfb_ms": {q: _r(pct(s.ttfb_ms, v)) for q, v in (("p50", 50), ("p99", 99))},
            "chunk_delay_ms": {
                q: _r(pct(s.chunk_delay_ms, v)) for q, v in (("p50", 50), ("p99", 99))
            },
        }

    def compare(direct: StreamSample, proxy: StreamSample) -> dict[str, Any]:
        sd, sp = stream_stats(direct), stream_stats(proxy)
        return {
            "direct": sd,
            "proxy": sp,
            "added_ttfb_ms": {q: _r(sp["ttfb_ms"][q] - sd["ttfb_ms"][q]) for q in ("p50", "p99")},
            "added_chunk_delay_ms": {
                q: _r(sp["chunk_delay_ms"][q] - sd["chunk_delay_ms"][q]) for q in ("p50", "p99")
            },
        }

    streams: dict[str, Any] = {
        "concurrency": plan.stream_concurrency,
        "first_byte_ms": plan.first_byte_ms,
        "chunk_interval_ms": plan.chunk_ms,
        "chunks_per_stream": plan.chunks,
        "arrivals": "steady: client i starts i x (stream duration / concurrency) late",
        **compare(s_direct, s_proxy),
        "burst": {
            "arrivals": "burst: all clients start at once and stay in lockstep",
            **compare(b_direct, b_proxy),
        },
    }
    budget = {
        "added_latency_p50": latency["added_ms"]["p50"] <= BUDGET_P50_MS,
        "added_latency_p99": latency["added_ms"]["p99"] <= BUDGET_P99_MS,
        "throughput": throughput["proxy"]["rps"] >= BUDGET_RPS
        and throughput["proxy"]["errors"] == 0,
        "added_ttfb_p50": streams["added_ttfb_ms"]["p50"] <= BUDGET_TTFB_MS and s_proxy.errors == 0,
        "no_batching": s_proxy.batched_http_chunks == 0 and s_proxy.chunks > 0,
        "rss": rss["peak_mb"] <= BUDGET_RSS_MB
        and rss["growth_after_warmup_mb"] <= RSS_GROWTH_TOLERANCE_MB,
    }
    return {
        "benchmark": "arbstr added cost: direct to the mock upstream vs through arbstr",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": info,
        "settings": {
            "plan": asdict(plan),
            "proxy": "arbstr serve, 4 providers, 3 policy rules (request matches"
            " 'code_generation' by keyword), --log-level info"
            + (", SQLite request log (--db)" if logging["sqlite"] else ""),
            "routed": routed,
            "mock_upstream": "bench/upstream.py: asyncio Protocol on uvloop, pre-encoded answers",
            "load": "wrk -t1 (throughput), blocking-socket client (c=1 latency),"
            " asyncio client (streams)",
        },
        "latency_c1": latency,
        "throughput": throughput,
        "streaming": streams,
        "rss": rss,
        "logging": logging,
        "other_load": summarize_noise(noise),
        "budget": budget,
        "budget_ok": all(budget.values()),
        "wall_s": round(wall_s, 1),
    }


# --------------------------------------------------------------------------------------------
# report


def _ok(flag: bool) -> str:
    return "✅ pass" if flag else "❌ FAIL"


def table(res: dict[str, Any]) -> str:
    lat, thr, st, rss, b = (
        res["latency_c1"],
        res["throughput"],
        res["streaming"],
        res["rss"],
        res["budget"],
    )
    c = thr["concurrency"]
    sc = st["concurrency"]
    bu = st["burst"]
    rows = [
        "| measure | direct | via arbstr | added by arbstr | budget | verdict |",
        "|---|---:|---:|---:|---|---|",
        f"| latency p50, c=1, non-streaming | {lat['direct_ms']['p50']:.3f} ms"
        f" | {lat['proxy_ms']['p50']:.3f} ms | **{lat['added_ms']['p50']:.3f} ms**"
        f" | ≤ {BUDGET_P50_MS} ms | {_ok(b['added_latency_p50'])} |",
        f"| latency p99, c=1, non-streaming | {lat['direct_ms']['p99']:.3f} ms"
        f" | {lat['proxy_ms']['p99']:.3f} ms | **{lat['added_ms']['p99']:.3f} ms**"
        f" | ≤ {BUDGET_P99_MS} ms | {_ok(b['added_latency_p99'])} |",
        f"| throughput, c={c}, non-streaming | {thr['direct']['rps']:,.0f} req/s"
        f" | **{thr['proxy']['rps']:,.0f} req/s** | | ≥ {BUDGET_RPS:,.0f} req/s, no errors"
        f" | {_ok(b['throughput'])} |",
        f"| errors, c={c} | {thr['direct']['errors']} of {thr['direct']['requests']:,}"
        f" | {thr['proxy']['errors']} of {thr['proxy']['requests']:,} | | 0 | |",
        f"| latency p50 / p99 under load, c={c} | {thr['direct']['p50_ms']:.2f} /"
        f" {thr['direct']['p99_ms']:.2f} ms | {thr['proxy']['p50_ms_median_slice']:.2f} /"
        f" {thr['proxy']['p99_ms_worst_slice']:.2f} ms | | | |",
        f"| stream time to first chunk p50, c={sc}, steady arrivals"
        f" | {st['direct']['ttfb_ms']['p50']:.3f} ms"
        f" | {st['proxy']['ttfb_ms']['p50']:.3f} ms | **{st['added_ttfb_ms']['p50']:.3f} ms**"
        f" | ≤ {BUDGET_TTFB_MS} ms | {_ok(b['added_ttfb_p50'])} |",
        f"| stream time to first chunk p99, c={sc}, steady arrivals"
        f" | {st['direct']['ttfb_ms']['p99']:.3f} ms"
        f" | {st['proxy']['ttfb_ms']['p99']:.3f} ms | {st['added_ttfb_ms']['p99']:.3f} ms | | |",
        f"| same, burst arrivals: p50 / p99 | {bu['direct']['ttfb_ms']['p50']:.3f} /"
        f" {bu['direct']['ttfb_ms']['p99']:.3f} ms | {bu['proxy']['ttfb_ms']['p50']:.3f} /"
        f" {bu['proxy']['ttfb_ms']['p99']:.3f} ms | {bu['added_ttfb_ms']['p50']:.3f} /"
        f" {bu['added_ttfb_ms']['p99']:.3f} ms | | |",
        f"| chunk relay delay p50 / p99, c={sc} | {st['direct']['chunk_delay_ms']['p50']:.3f} /"
        f" {st['direct']['chunk_delay_ms']['p99']:.3f} ms"
        f" | {st['proxy']['chunk_delay_ms']['p50']:.3f} /"
        f" {st['proxy']['chunk_delay_ms']['p99']:.3f} ms"
        f" | {st['added_chunk_delay_ms']['p50']:.3f} / {st['added_chunk_delay_ms']['p99']:.3f} ms"
        " | | |",
        f"| chunks batched together | {st['direct']['batched_http_chunks']} of"
        f" {st['direct']['chunks']:,} | {st['proxy']['batched_http_chunks']} of"
        f" {st['proxy']['chunks']:,} | | none | {_ok(b['no_batching'])} |",
        f"| proxy RSS after warm-up → after {rss['requests']:,} requests (peak)"
        f" | | {rss['after_warmup_mb']:.1f} → {rss['final_mb']:.1f} MB"
        f" ({rss['peak_mb']:.1f}) | {rss['growth_after_warmup_mb']:+.1f} MB"
        f" | ≤ {BUDGET_RSS_MB:.0f} MB, no growth | {_ok(b['rss'])} |",
    ]
    m = res.get("metrics")
    if m is not None:
        rows.append(
            f"| metrics on: `GET /metrics` at the end | | {m['requests_counted']:,} requests"
            f" counted ({m.get('sqlite_rows') or 0:,} rows logged), {m['scrape_ms']:.1f} ms"
            " | | | |"
        )
        if "observe_us" in m:
            rows.append(
                f"| metrics: cost per request (`Metrics.observe`, best of 5) | |"
                f" {m['observe_us']:.2f} µs | **{m['observe_us']:.2f} µs** |"
                f" ≤ {BUDGET_OBSERVE_US} µs | {_ok(b.get('metrics_observe', True))} |"
            )
    return "\n".join(rows)


def settings_text(res: dict[str, Any]) -> str:
    m, s, lg = res["machine"], res["settings"], res["logging"]
    plan = s["plan"]
    pk = m["packages"]
    lines = [
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gb']} GB, Linux {m['kernel']},"
        f" Python {m['python']}; arbstr {pk['arbstr']} ({m['commit']}), uvicorn {pk['uvicorn']},"
        f" uvloop {pk['uvloop']}, aiohttp {pk['aiohttp']}, msgspec {pk['msgspec']}; {m['wrk']}.",
        f"Pinning: {m['pinning']}.",
        f"Proxy: {s['proxy']}; routed to provider {s['routed'].get('x-arbstr-provider')},"
        f" model {s['routed'].get('x-arbstr-model')}, policy"
        f" {s['routed'].get('x-arbstr-policy')}. Request log lines: {lg['request_log_lines']:,};"
        f" SQLite rows: {'n/a' if lg['sqlite_rows'] is None else format(lg['sqlite_rows'], ',')}.",
        f"Load: c=1 latency over {res['latency_c1']['pairs']:,} alternating direct/proxied"
        f" requests; throughput with wrk -t1 -c{plan['concurrency']}, direct"
        f" {plan['wrk_direct_s']} s, via arbstr {len(res['throughput']['proxy']['slice_rps'])}"
        f" x {plan['wrk_slice_s']} s; {plan['streams']} streams each way at"
        f" c={plan['stream_concurrency']}, {plan['chunks']} chunks, first chunk after"
        f" {plan['first_byte_ms']:g} ms, then every {plan['chunk_ms']:g} ms; steady arrivals"
        " (the clients' starts spread over one stream's duration), then a burst (all at once,"
        " in lockstep).",
        f"Other load on the machine: {res['other_load']['other_cpu_pct_avg']}% of a CPU on"
        f" average (worst: {res['other_load']['worst_phase_other_cpu_pct']}% during"
        f" {res['other_load']['worst_phase']}), hypervisor steal"
        f" {res['other_load']['steal_pct_avg']}%; CPU speed check (a fixed Python loop on the"
        f" proxy's CPU) {m['cpu_speed_ns_per_loop_start']} ns/loop at the start,"
        f" {m['cpu_speed_ns_per_loop_end']} at the end"
        + (
            "."
            if res["other_load"]["quiet"]
            else f" — WARNING: above {NOISY_PCT:g}%, the numbers are disturbed; run again"
            " on a quiet machine."
        ),
        "arbstr's own x-arbstr-overhead-ms header, p50:"
        f" {res['latency_c1']['proxy_reported_overhead_ms_p50']} ms."
        f" Run took {res['wall_s']:.0f} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run (~40 s)")
    p.add_argument("--requests", type=int, help="proxied requests in total (default 100000)")
    p.add_argument("--strict", action="store_true", help="exit 1 when over budget")
    p.add_argument(
        "--many-streams",
        type=int,
        help="streams at once in the many-streams row (default 1000, --quick 200; 0: skip it)",
    )
    p.add_argument(
        "--out", type=Path, default=BENCH / "results" / "latest.json", help="JSON output"
    )
    a = p.parse_args(argv)
    plan = QUICK if a.quick else Plan()
    if a.requests is not None:
        plan = Plan(**{**asdict(plan), "total_requests": a.requests})
    from bench import many  # (imports this module)

    many_plan = many.QUICK_MANY if a.quick else many.ManyPlan()
    if a.many_streams is not None:
        many_plan = many.ManyPlan(**{**asdict(many_plan), "streams": a.many_streams})
    res = measure(plan, a.out)
    from bench.metrics import observe_us

    res["metrics"]["observe_us"] = round(observe_us(), 3)
    res["budget"]["metrics_observe"] = res["metrics"]["observe_us"] <= BUDGET_OBSERVE_US
    res["budget_ok"] = all(res["budget"].values())
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    if many_plan.streams > 0:
        log(f"many streams: {many_plan.streams} at once through a fresh arbstr process")
        res["many_streams"] = many.measure_many(many_plan)
        res["budget"].update(res["many_streams"]["budget"])
        res["budget_ok"] = all(res["budget"].values())
        a.out.write_text(json.dumps(res, indent=2) + "\n")
    print()
    print(table(res))
    if "many_streams" in res:
        print("\n".join(many.many_table_rows(res["many_streams"])))
    print()
    print(settings_text(res))
    if "many_streams" in res:
        print(many.many_settings_text(res["many_streams"]))
    print()
    verdict = "within budget" if res["budget_ok"] else "OVER BUDGET"
    steal = res["other_load"]["steal_pct_avg"]
    if steal > DISTURBED_STEAL_PCT:
        print(
            f"WARNING: the hypervisor took {steal}% of the CPUs' time during this run (steal):"
            " its timings are not comparable with a quiet run's; run it again."
        )
    print(f"Budget: {verdict}. Results written to {a.out}")
    return 1 if a.strict and not res["budget_ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
