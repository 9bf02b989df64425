"""Shared fixtures: the PyFlink process environment, per-test isolated pipeline config, the local stack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from connectors.properties import local_aws_environment
from infra.local import stack as local_stack
from infra.local.isolation import isolated_config, isolated_contracts  # noqa: F401 - re-exported to tests
from infra.local.settings import StackSettings

# Placeholders for the local S3 API (moto accepts any key); never real credentials.
local_aws_environment()


# The long tier (decision 0045): what `medistream release` leaves to the pipeline's parallel LongTier action and to
# CI's whole-suite run (`./medistream test` runs both tiers). Test seconds in one whole-suite run on this 2-core
# machine (2026-12-05): chaos 304, contract suite 345, job control 416, deploy 347, Kinesis door 134, batch 112,
# cluster 92: 1,750 of ~2,770.
LONG_TIER = ("tests/chaos/", "tests/contract/", "tests/integration/test_job_control.py",
             "tests/integration/test_deploy.py", "tests/integration/test_kinesis_pull.py",
             "tests/integration/test_batch.py", "tests/integration/test_cluster.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the long tier's tests `long`: `-m "not long"` is the fast tier, `-m long` the rest."""
    for item in items:
        if item.nodeid.startswith(LONG_TIER):
            item.add_marker(pytest.mark.long)


@pytest.fixture(scope="session")
def flink_process_env() -> None:
    """Environment the PyFlink gateway needs; must be in place before its JVM starts."""
    from jobs.runtime import prepare_process_environment

    prepare_process_environment()


@pytest.fixture
def run_id() -> str:
    """A short unique id, so every test gets its own topics, prefixes and tables."""
    return uuid.uuid4().hex[:8]


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
    # The observers (Prometheus, the lineage store) are reported only when ours run: absent, `up` started them.
    started_here = [c.name for c in (before.kafka, before.moto) if not c.running] + [
        name for name in ("prometheus", "lineage", "postgres") if getattr(before, name) is None]
    try:
        yield settings
    finally:
        local_stack.down(settings, components=started_here)
