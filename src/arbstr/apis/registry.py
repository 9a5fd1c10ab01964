"""Which :class:`~arbstr.apis.base.Api` serves which client path.

Adding an API is one line in :data:`APIS`. Each is served at its ``path`` and at that path
without the ``/v1`` prefix (clients whose base URL lacks it, as for chat today)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from arbstr.apinames import ApiName
from arbstr.apis.base import Api
from arbstr.apis.chat import CHAT
from arbstr.apis.completions import COMPLETIONS
from arbstr.apis.embeddings import EMBEDDINGS
from arbstr.apis.messages import MESSAGES
from arbstr.apis.responses import RESPONSES

APIS: tuple[Api, ...] = (
    CHAT,
    EMBEDDINGS,
    COMPLETIONS,
    RESPONSES,
    MESSAGES,
)


def routes(apis: Iterable[Api] = APIS) -> dict[str, Api]:
    """Client path -> Api (``/v1/x`` and ``/x``). ``ValueError`` on a path claimed twice."""
    out: dict[str, Api] = {}
    for api in apis:
        paths = [api.path]
        if api.path.startswith("/v1/"):
            paths.append(api.path[3:])
        for p in paths:
            if p in out:
                raise ValueError(f"path {p} registered twice")
            out[p] = api
    return out


def by_name(apis: Iterable[Api] = APIS) -> Mapping[ApiName, Api]:
    """Each name's first Api (the one a translated API falls back to, e.g. chat)."""
    out: dict[ApiName, Api] = {}
    for api in apis:
        out.setdefault(api.name, api)
    return out
