"""Conversation stickiness: follow-up turns of one conversation go back to the provider and
model that answered it while that one is healthy, so its prompt cache keeps paying (cached
input is billed at the cache-read rate); within a conversation the tier only moves up.

Pure: the key of a request, a bounded map of conversations (LRU, idle TTL, injected clock)
and the reordering of a route. Only a 16-byte hash is kept per conversation, never a
session id or prompt text."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b
from typing import Literal

from arbstr.apis.base import ApiRequest
from arbstr.config import TIER_NAMES
from arbstr.routing.router import Candidate, Route

MAX_PREFIX_CHARS = 4096  # of each text hashed into a conversation's key
_RANK = {t: i for i, t in enumerate(TIER_NAMES)}

Verdict = Literal["hit", "miss", "new"]


def _text(text: str | None) -> bytes:
    if not text:
        return b""
    return text[:MAX_PREFIX_CHARS].encode("utf-8", "surrogatepass")


def conversation_key(session: bytes | None, req: ApiRequest) -> bytes | None:
    """The conversation ``req`` belongs to (16 bytes), or None: not a conversation.

    A session header (``X-Arbstr-Session``, else ``X-Claude-Code-Session-Id``) names it
    together with the API and the model asked for; without one, a request of at least two
    turns is keyed by its prefix: the model asked for, the system text and the first user
    text (each at most ``MAX_PREFIX_CHARS``). A single-turn request without a header is
    never keyed, and nothing is hashed for it."""
    if session:
        parts = [b"s", session[:MAX_PREFIX_CHARS]]
    else:
        f = req.features
        if f.turns < 2:
            return None
        parts = [b"p", _text(f.system_text), _text(f.first_user_text)]
    parts += (req.api.encode(), _text(req.model))
    # each part length-prefixed, so that no two different lists hash the same bytes
    data = b"".join(len(x).to_bytes(4, "little") + x for x in parts)
    return blake2b(data, digest_size=16, person=b"arbstr-convo").digest()


def higher_tier(a: str | None, b: str | None) -> str | None:
    """The higher of two tiers (None counts as below every tier)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if _RANK.get(a, -1) >= _RANK.get(b, -1) else b


@dataclass(frozen=True, slots=True)
class Sticky:
    """Where a conversation was last answered."""

    provider: str
    model: str  # the provider's listed id
    tier: str | None  # the highest tier it was routed within (None: no tier applied)
    last_used: float


class Conversations:
    """Conversation key -> :class:`Sticky`, at most ``max_entries`` (the least recently
    answered dropped first), each forgotten ``idle_s`` after its last answer. ``max_entries``
    0 turns stickiness off. Single-threaded (event loop) use only."""

    def __init__(
        self,
        max_entries: int = 10_000,
        idle_s: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.idle_s = idle_s
        self._clock = clock
        self._map: OrderedDict[bytes, Sticky] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._map)

    def get(self, key: bytes) -> Sticky | None:
        s = self._map.get(key)
        if s is not None and self._clock() - s.last_used > self.idle_s:
            del self._map[key]
            return None
        return s

    def remember(self, key: bytes, provider: str, model: str, tier: str | None) -> None:
        """An answer of the conversation succeeded on (provider, model) in ``tier``. Its
        tier never goes down: an answer in a lower tier (a client's ``X-Arbstr-Tier``) keeps
        the conversation where it was."""
        if not self.enabled:
            return
        m = self._map
        old = m.pop(key, None)
        now = self._clock()
        if (
            old is not None
            and now - old.last_used <= self.idle_s
            and old.tier != tier
            and higher_tier(old.tier, tier) == old.tier
        ):
            provider, model, tier = old.provider, old.model, old.tier
        m[key] = Sticky(provider, model, tier, now)
        # the oldest are first: drop the idle ones, then any over the bound
        while m:
            first = next(iter(m.values()))
            if now - first.last_used <= self.idle_s and len(m) <= self.max_entries:
                break
            m.popitem(last=False)


def prefer(
    r: Route, s: Sticky, *, by_provider_only: bool, usable: Callable[[Candidate], bool]
) -> tuple[Route, Candidate | None]:
    """``r`` with the conversation's candidate first when it is among ``r``'s candidates and
    ``usable`` (breaker not open, funds), and that candidate (None: a miss, ``r`` as it was).
    ``by_provider_only``: a concrete model, where only the provider is sticky."""
    cands = r.candidates
    for i, c in enumerate(cands):
        if c.provider.name != s.provider or (not by_provider_only and c.model != s.model):
            continue
        if not usable(c):
            return r, None
        if i == 0:
            return r, c
        rest = cands[:i] + cands[i + 1 :]
        return Route(c.model, (c, *rest), r.tier, r.reason), c
    return r, None


__all__ = [
    "MAX_PREFIX_CHARS",
    "Conversations",
    "Sticky",
    "Verdict",
    "conversation_key",
    "higher_tier",
    "prefer",
]
