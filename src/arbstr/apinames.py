"""The names of the client APIs arbstr serves (dependency-free: config and storage use them)."""

from __future__ import annotations

from typing import Literal

ApiName = Literal["chat", "responses", "messages", "embeddings", "completions"]
ALL_APIS: tuple[ApiName, ...] = ("chat", "responses", "messages", "embeddings", "completions")
