"""Fixtures of the component tier: in-process servers, no broker, no store, no Faust."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.component.support import Component, running_component


@pytest.fixture
async def component(tmp_path: Path) -> AsyncIterator[Component]:
    """A gateway with its admin API on default settings."""
    async with running_component(tmp_path) as running:
        yield running
