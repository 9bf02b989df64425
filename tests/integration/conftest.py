"""Fixtures for integration tests against the real local stack (Kafka broker, moto server)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from infra.local.isolation import write_properties  # noqa: F401 - re-exported to tests


def pytest_configure(config: pytest.Config) -> None:
    """Register the integration marker (harmless if pyproject registers it too)."""
    config.addinivalue_line("markers", "integration: needs the local stack (Kafka, moto)")


def wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(1)


@pytest.fixture(scope="session")
def packaged_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Managed Flink zip of HEAD (Python 3.12), built once for every test that runs or inspects it (read-only:
    a test that alters a zip writes its own copy)."""
    from tools.package import Target, build

    return build(Target("3.12"), tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def runtime_python() -> Path:
    """The Managed-Flink-like Python 3.12 runtime (only apache-flink) the packaged zip runs on."""
    from tools.deploy import ensure_runtime

    return ensure_runtime()
