"""Where the request log lives: a SQLite file path, or a PostgreSQL URL
(``postgresql://user:password@host:port/db``), told apart by the URL's scheme. The password
is a secret: :func:`display` is the form that may be logged or answered."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit

SCHEMES = ("postgresql://", "postgres://")
HIDDEN = "***"


def is_postgres(location: str) -> bool:
    return location.lower().startswith(SCHEMES)


def password(location: str) -> str | None:
    """The password a PostgreSQL URL carries (decoded), if any."""
    if not is_postgres(location):
        return None
    try:
        raw = urlsplit(location).password
    except ValueError:
        return None
    return unquote(raw) if raw else None


def display(location: str) -> str:
    """``location`` with the password of a PostgreSQL URL (and any ``password=`` query
    parameter) replaced by ``***``: safe for logs, errors and answers."""
    if not is_postgres(location):
        return location
    try:
        parts = urlsplit(location)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{HIDDEN}@{host}" if ":" in userinfo else f"{user}@{host}"
        query = "&".join(
            f"{k}={HIDDEN}" if k.lower() == "password" else f"{k}={v}" if sep else k
            for k, sep, v in (p.partition("=") for p in parts.query.split("&") if p)
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return f"{location.split('://', 1)[0]}://{HIDDEN}"


def scrub(text: str, location: str) -> str:
    """``text`` (an error message) without the password of ``location``, raw or encoded."""
    secrets = {password(location) or ""}
    for s in list(secrets):
        secrets.add(quote(s, safe=""))
    for q in _query_passwords(location):
        secrets.add(q)
    for s in sorted(secrets, key=len, reverse=True):
        if s:
            text = text.replace(s, HIDDEN)
    return text.replace(location, display(location))


def _query_passwords(location: str) -> list[str]:
    if not is_postgres(location):
        return []
    try:
        query = urlsplit(location).query
    except ValueError:
        return []
    out = []
    for p in query.split("&"):
        k, _, v = p.partition("=")
        if k.lower() == "password" and v:
            out += [v, unquote(v)]
    return out
