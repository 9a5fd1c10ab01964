"""A real PostgreSQL server for the tests: ``initdb`` into a temporary directory, ``postgres``
on a free 127.0.0.1 port, stopped at the end.

The binaries are Debian's (``/usr/lib/postgresql/<version>/bin``; ``make test`` installs the
``postgresql`` package when they are missing). PostgreSQL refuses to run as root, so as root
both run as the unprivileged ``nobody`` (``setpriv``), owning the data directory. Password
authentication (scram-sha-256) over TCP, so URLs carry a real secret; fsync is off (a test
server needs no durability).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from serving import free_port as _free_port

USER = "arbstr"
PASSWORD = "pg-test-secret-9f3b1c"
_NOBODY = 65534


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and postgres."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(found[-1]).parent if found else None


def _as_postgres_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups", "--"]


class PgServer:
    """One running server; :meth:`create_database` gives each test its own database."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        # as root the server runs as nobody, who must reach the directory: /tmp, not a
        # $TMPDIR that may sit under root's own 0700 home
        base = "/tmp" if os.geteuid() == 0 and os.path.isdir("/tmp") else None
        self.root = Path(tempfile.mkdtemp(prefix="arbstr-pg-", dir=base))
        self.data = self.root / "data"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._n = 0

    def url(self, dbname: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{dbname}"

    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(self.root, _NOBODY, _NOBODY)
            os.chown(pwfile, _NOBODY, _NOBODY)
        subprocess.run(  # noqa: S603 - our own arguments
            [
                *_as_postgres_user(),
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=self.root,
        )

    def start(self, timeout_s: float = 30.0) -> None:
        """Start on a free port (the same one again after :meth:`stop`); waits until it
        accepts connections."""
        for attempt in range(3):
            if not self.port or attempt:
                self.port = _free_port()
            log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server's stderr
            self.proc = subprocess.Popen(  # noqa: S603 - our own arguments
                [
                    *_as_postgres_user(),
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.root),
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=32MB",
                ],
                stdout=log,
                stderr=log,
                cwd=self.root,
            )
            log.close()
            if self._wait_ready(timeout_s):
                return
            self.stop()
        tail = (self.root / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"PostgreSQL did not start:\n{tail}")

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, the data directory stays."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(2)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def create_database(self) -> str:
        """A new empty database; its URL."""
        self._n += 1
        name = f"t{self._n}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_server() -> Iterator[PgServer | None]:
    """A started server, or None when no PostgreSQL binaries are installed."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        yield None
        return
    server = PgServer(bin_dir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()
