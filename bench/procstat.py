"""What the many-streams row reads about a process from ``/proc``: open fds (count and
kinds), CPU seconds, and peaks sampled while streams run; and raising this process's own
fd limit."""

from __future__ import annotations

import os
import resource
import threading

from bench.run import rss_kb


def raise_nofile(want: int) -> None:
    """This process's soft fd limit up to ``want`` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> dict[str, int]:
    """Open fds by what they point at (``socket``, ``anon_inode:[eventpoll]``, a file...)."""
    out: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":[", 1)[0] if target.startswith(("socket:", "pipe:")) else target
        out[kind] = out.get(kind, 0) + 1
    return out


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


class Sampler:
    """The proxy's open fds and RSS every 100 ms, in a thread, while streams run."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_fds = 0
        self.peak_rss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.peak_fds = max(self.peak_fds, fd_count(self.pid))
                self.peak_rss_kb = max(self.peak_rss_kb, rss_kb(self.pid)["VmRSS"])
            except OSError:
                return
