"""Replacing a user's config file: the old one kept as ``<name>.bak-<UTC time>``, the new one
put in place atomically, both with the given mode from the moment they exist (they may name
secrets)."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path


def replace_file(path: Path, text: str, mode: int, now: datetime | None = None) -> Path | None:
    """Write ``text`` to ``path`` (created with its directory if need be); returns the backup
    of the file it replaced, if there was one. Raises ``OSError``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    backup: Path | None = None
    if path.exists():
        backup = backup_name(path, now or datetime.now(UTC))
        fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(path.read_bytes())
        os.chmod(backup, mode)  # (the umask may have narrowed it)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup


def backup_name(path: Path, now: datetime) -> Path:
    """``<name>.bak-<UTC time>``, with ``-2``, ``-3`` … when that is taken."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    return candidate
