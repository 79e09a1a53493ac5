"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from gateway.providers.base import Provider


@pytest.fixture
async def providers() -> AsyncIterator[Callable[[Provider], Provider]]:
    """Keeps each provider a test makes (`providers(p)` returns p) and closes them after."""
    opened: list[Provider] = []

    def keep(provider: Provider) -> Provider:
        opened.append(provider)
        return provider

    yield keep
    for provider in opened:
        await provider.close()
