"""Secrets out of everything that leaves arbstr or is stored.

A provider may echo the key it was sent ("Incorrect API key provided: sk-…"), whole or masked
(``sk-abc***xyz``, ``sk-ab…yz``). :class:`Redactor` replaces both forms of every configured
secret with ``[REDACTED]``, in text and in bytes. A cheap substring check on the secrets' first
characters comes first, so clean data (nearly all of it) costs one ``in`` per prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"
MIN_SECRET_LEN = 6  # shorter values are not treated as secrets (they would match everyday text)
_MASKED_MIN_LEN = 12  # a masked echo is recognised for secrets at least this long
_PREFIX_LEN = 3
# a visible start, then a mask (ellipses, or runs of 3+ of the same * . •; also JSON-escaped),
# then maybe a visible end
_ELLIPSIS = "\u2026"
_DOTS = ("*", ".", "\u2022")
_JSON_ELLIPSIS, _JSON_BULLET = r"\u2026", r"\u2022"


def _masked_pattern(as_bytes: bool) -> str:
    def lit(c: str) -> str:
        return "".join(f"\\x{b:02x}" for b in c.encode()) if as_bytes else re.escape(c)

    runs = "|".join(f"(?:{c}){{3,}}" for c in [*map(lit, _DOTS), re.escape(_JSON_BULLET)])
    mask = f"(?:{lit(_ELLIPSIS)}|{re.escape(_JSON_ELLIPSIS)}|{runs})+"
    return rf"([A-Za-z0-9_\-]{{3,}})({mask})([A-Za-z0-9_\-]*)"


class Redactor:
    """Replaces the given secrets (whole or masked) with ``[REDACTED]``."""

    __slots__ = ("_bytes_re", "_long", "_prefixes", "_prefixes_b", "_text_re")

    def __init__(self, secrets: Iterable[str | None]) -> None:
        keys = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)
        self._long = tuple(k for k in keys if len(k) >= _MASKED_MIN_LEN)
        self._prefixes = tuple({k[:_PREFIX_LEN] for k in keys})
        self._prefixes_b = tuple(p.encode() for p in self._prefixes)
        whole = "|".join(re.escape(k) for k in keys)
        if not keys:
            self._text_re: re.Pattern[str] | None = None
            self._bytes_re: re.Pattern[bytes] | None = None
            return
        text_mask = _masked_pattern(as_bytes=False)
        bytes_mask = _masked_pattern(as_bytes=True)  # multi-byte characters as UTF-8
        masked = bool(self._long)
        self._text_re = re.compile(f"({whole})|{text_mask}" if masked else f"({whole})")
        self._bytes_re = re.compile(
            (f"({whole})|{bytes_mask}" if masked else f"({whole})").encode()
        )

    @property
    def active(self) -> bool:
        return self._text_re is not None

    def _masked_secret(self, start: str, end: str) -> bool:
        return any(k.startswith(start) and k.endswith(end) for k in self._long)

    def _text_sub(self, m: re.Match[str]) -> str:
        if m.group(1) is not None or self._masked_secret(m.group(2), m.group(4) or ""):
            return REDACTED
        return m.group(0)

    def _bytes_sub(self, m: re.Match[bytes]) -> bytes:
        if m.group(1) is not None:
            return REDACTED.encode()
        start = m.group(2).decode("ascii")
        end = (m.group(4) or b"").decode("ascii")
        return REDACTED.encode() if self._masked_secret(start, end) else m.group(0)

    def text(self, value: str) -> str:
        for p in self._prefixes:  # (a loop, not any(): this runs on every answer)
            if p in value:
                assert self._text_re is not None
                return self._text_re.sub(self._text_sub, value)
        return value

    def bytes(self, value: bytes) -> bytes:
        for p in self._prefixes_b:
            if p in value:
                assert self._bytes_re is not None
                return self._bytes_re.sub(self._bytes_sub, value)
        return value


NO_SECRETS = Redactor(())
