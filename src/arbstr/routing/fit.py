"""Whether a request fits a model: its context window, its input modalities, its tool
support. Pure. Unknown metadata fits (only what is known to be too small or missing rules a
model out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from arbstr.config import ModelInfo

MisfitCode = Literal["context_length_exceeded", "unsupported_input"]


@dataclass(frozen=True, slots=True)
class Needs:
    """What a request needs of a model."""

    prompt_tokens: int  # the estimate (text chars / 4)
    output_tokens: int = 0  # the client's max_tokens (0: none asked)
    images: int = 0  # image parts in the request
    tools: int = 0  # tool definitions in the request


@dataclass(frozen=True, slots=True)
class Misfit:
    code: MisfitCode
    message: str


def misfit(model: str, info: ModelInfo | None, needs: Needs) -> Misfit | None:
    """Why ``model`` cannot take the request, or None when it can (or nothing says)."""
    if info is None:
        return None
    limit = info.context_length
    total = needs.prompt_tokens + needs.output_tokens
    if limit is not None and total > limit:
        return Misfit(
            "context_length_exceeded",
            f"model {model!r} has a context of {limit} tokens; the request needs about"
            f" {total} ({needs.prompt_tokens} prompt + {needs.output_tokens} output)",
        )
    if needs.images and info.input_modalities and "image" not in info.input_modalities:
        return Misfit(
            "unsupported_input",
            f"model {model!r} takes {', '.join(info.input_modalities)} input, not images"
            f" (the request has {needs.images})",
        )
    if needs.tools and info.tools is False:
        return Misfit(
            "unsupported_input",
            f"model {model!r} does not support tools (the request has {needs.tools})",
        )
    return None
