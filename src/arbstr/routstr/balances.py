"""Provider balances from ``GET {url}/balance/info`` (``arbstr balance``, ``GET /v1/balances``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from arbstr.config import Provider
from arbstr.money import msats_to_sats

if TYPE_CHECKING:  # the caller brings aiohttp along with its session
    import aiohttp


class _BalanceInfo(msgspec.Struct):
    balance: int | float | None = None
    reserved: int | float | None = None


_balance_decoder = msgspec.json.Decoder(_BalanceInfo)


@dataclass(slots=True)
class Balance:
    provider: str
    balance_sats: Decimal | None = None
    reserved_sats: Decimal | None = None
    error: str | None = None
    http_status: int | None = None  # of a /balance/info answer that was not 200

    @property
    def balance_msats(self) -> int | None:
        return None if self.balance_sats is None else int(self.balance_sats.scaleb(3))

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "balance_sats": None if self.balance_sats is None else float(self.balance_sats),
            "reserved_sats": None if self.reserved_sats is None else float(self.reserved_sats),
            "error": self.error,
        }


async def fetch_balance(
    session: aiohttp.ClientSession, provider: Provider, timeout_s: float
) -> Balance:
    """One provider's balance (msats on the wire -> sats). Never raises: errors are reported
    in the result. Only the numbers are kept: the node's answer may echo the key."""
    from aiohttp import ClientError, ClientTimeout

    if not provider.api_key:
        return Balance(provider.name, error="no API key configured")
    try:
        async with session.get(
            f"{provider.url}/balance/info",
            headers={"Authorization": f"Bearer {provider.api_key}"},
            timeout=ClientTimeout(total=timeout_s),
        ) as resp:
            body = await resp.read()
            if resp.status != 200:
                return Balance(provider.name, error=f"HTTP {resp.status}", http_status=resp.status)
        info = _balance_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Balance(provider.name, error="unreadable /balance/info answer")
    except (ClientError, OSError, TimeoutError) as exc:
        return Balance(provider.name, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
    if info.balance is None:
        return Balance(provider.name, error="no balance in /balance/info answer")
    return Balance(
        provider.name,
        balance_sats=msats_to_sats(info.balance),
        reserved_sats=None if info.reserved is None else msats_to_sats(info.reserved),
    )


async def fetch_balances(
    session: aiohttp.ClientSession, providers: Sequence[Provider], timeout_s: float = 10.0
) -> list[Balance]:
    return list(await asyncio.gather(*(fetch_balance(session, p, timeout_s) for p in providers)))
