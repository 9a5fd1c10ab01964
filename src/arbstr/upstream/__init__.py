"""Talking to providers: one classified attempt (``client``) over a keep-alive HTTP/1.1 pool
(``transport``, behind the ``protocol`` seam), retries and fallback around it (``executor``),
and a stream relayed byte for byte (``sse``, ``relay``) with usage and cost read out
(``usage``)."""

from arbstr.upstream.client import AttemptFailed, JsonReply, StreamReply, UpstreamClient
from arbstr.upstream.executor import AttemptLog, run_with_retries
from arbstr.upstream.relay import StreamRelay
from arbstr.upstream.usage import Usage, provider_cost_msats

__all__ = [
    "AttemptFailed",
    "AttemptLog",
    "JsonReply",
    "StreamRelay",
    "StreamReply",
    "UpstreamClient",
    "Usage",
    "provider_cost_msats",
    "run_with_retries",
]
