"""Fixtures for integration tests against the real local stack (Kafka broker, moto server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.local import stack as local_stack
from infra.local.settings import StackSettings


def pytest_configure(config: pytest.Config) -> None:
    """Register the integration marker (harmless if pyproject registers it too)."""
    config.addinivalue_line("markers", "integration: needs the local stack (Kafka, moto)")


@pytest.fixture(scope="session")
def stack() -> Iterator[StackSettings]:
    """The local stack's settings, with the stack healthy for the whole session.

    A stack that is already healthy is used as is and left running; otherwise this fixture runs
    `up` and, at the end, stops only the components it started.
    """
    settings = StackSettings.from_env()
    before = local_stack.status(settings)
    if before.healthy:
        # Possibly started from another checkout: this home still needs its catalog folder.
        settings.iceberg_dir.mkdir(parents=True, exist_ok=True)
        yield settings
        return
    local_stack.up(settings)
    started_here = [c.name for c in (before.kafka, before.moto) if not c.running]
    try:
        yield settings
    finally:
        local_stack.down(settings, components=started_here)
