"""Routstr at run time: discovered prices (:mod:`.prices`, read with :mod:`.models`) and
balances (:mod:`.balances`), as the server and the CLI use them.

``arbstr discover`` (Nostr announcements, :mod:`.discover`, :mod:`.render`, :mod:`.nostr`) is
not imported here: it needs ``coincurve`` and aiohttp, which ``serve`` should not load.
"""

from arbstr.routstr.balances import Balance, fetch_balances
from arbstr.routstr.prices import DiscoveryStatus, PriceBook, discovery_timeout_s

__all__ = ["Balance", "DiscoveryStatus", "PriceBook", "discovery_timeout_s", "fetch_balances"]
