"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from arbstr.mock import MockProvider, start_mock_providers
from fake_upstream import FakeUpstream


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A started scripted fake upstream (see tests/fake_upstream.py)."""
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def mock_providers() -> AsyncIterator[list[MockProvider]]:
    """The default built-in mock providers (mock-alpha cheaper than mock-beta), started."""
    providers = await start_mock_providers()
    try:
        yield providers
    finally:
        for provider in providers:
            await provider.close()
