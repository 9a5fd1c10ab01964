"""Built-in mock providers: fake LLM endpoints served on loopback, for ``arbstr serve --mock``
and the test suite. Each serves chat completions, Responses, Anthropic Messages (and
count_tokens), embeddings and legacy completions natively, streaming included.

Each provider answers deterministically: the reply text names the provider and the model and
echoes the start of the last user message (or of a tool result); one word (plus its following
space) is one token; a tool call comes only when the request asks for one (see :mod:`.tools`);
``usage`` carries realistic token counts and a Routstr-style cost in sats/msats.
"""

from arbstr.mock.server import MockProvider, start_mock_providers
from arbstr.mock.spec import DEFAULT_MOCKS, MockSpec, mock_config_data

__all__ = [
    "DEFAULT_MOCKS",
    "MockProvider",
    "MockSpec",
    "mock_config_data",
    "start_mock_providers",
]
