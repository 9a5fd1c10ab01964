"""``HOST:PORT`` listen addresses."""

from __future__ import annotations

import ipaddress

from arbstr.errors import ConfigError


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str, *, where: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port)."""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]:")
    else:
        host, sep, rest = value.rpartition(":")
        if ":" in host:  # an IPv6 address must be bracketed, else the port is ambiguous
            sep = ""
    # isascii: str.isdigit() accepts e.g. "²" (int() then raises ValueError) and "١٢٣"
    if (
        not sep
        or not host
        or not (rest.isascii() and rest.isdigit())
        or not 0 <= int(rest) <= 65535
    ):
        raise ConfigError(
            f"{where}: expected HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080), got {value!r}"
        )
    return host, int(rest)
