"""Provider URLs: one parser for the config check and the upstream transport, so a URL
that passes ``arbstr check`` is one the transport can connect to."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class HttpUrl:
    scheme: str  # "http" or "https"
    host: str  # without brackets for IPv6 literals
    port: int
    path: str  # path and query, "/" at least

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: brackets around IPv6 literals, the port when not the
        scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def join(self, suffix: str) -> HttpUrl:
        """This URL with ``suffix`` appended to its path (``/v1`` + ``/chat/completions``)."""
        base, sep, query = self.path.partition("?")
        path = base.rstrip("/") + suffix + (sep + query if sep else "")
        return HttpUrl(self.scheme, self.host, self.port, path)


def parse_http_url(url: str) -> HttpUrl:
    """``http(s)://host[:port][/path]`` -> :class:`HttpUrl`; ``ValueError`` naming the problem."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError("must not contain spaces or control characters")
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in DEFAULT_PORTS:
        raise ValueError("must be an http:// or https:// URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Port out of range 0-65535", "Invalid IPv6 URL", ...
        raise ValueError(str(exc).lower()) from None
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@); set api_key instead")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    if port == 0:
        raise ValueError("port 0 is not a port one can connect to")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return HttpUrl(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], path)
