"""Fixtures for integration tests against the real local stack (Kafka broker, moto server)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from jobs.config import LOCAL_PROPERTIES
from tests.conftest import isolated_config


def pytest_configure(config: pytest.Config) -> None:
    """Register the integration marker (harmless if pyproject registers it too)."""
    config.addinivalue_line("markers", "integration: needs the local stack (Kafka, moto)")


def write_properties(run_id: str, home: Path) -> Path:
    """The local properties file with every resource unique to this run."""
    groups = json.loads(LOCAL_PROPERTIES.read_text())
    cfg = isolated_config(run_id, home)
    overrides = {
        "kafka": {"raw.topic.pattern": cfg.kafka.raw_topic_pattern, "dlq.topic": cfg.kafka.dlq_topic,
                  "group.id": cfg.kafka.group_id},
        "landing": {"path": cfg.landing.path},
        "iceberg": {"table.suffix": cfg.iceberg.table_suffix},
        "archive": {"path": cfg.archive.path, "dead.letters.path": cfg.archive.dead_letters_path},
        "curated": {"snowflake.topic": cfg.curated.snowflake_topic,
                    "partner.topic.prefix": cfg.curated.partner_topic_prefix},
        "checkpoints": {"dir": cfg.checkpoints.directory, "interval.ms": "2000"},
        "runtime": {"job.name": f"job-{run_id}"},
        "reference": {"path": cfg.reference.path, "monitor.interval": "2 s"},
        "feeds": {"contracts.dir": cfg.feeds.contracts_dir},
    }
    for group in groups:
        group["PropertyMap"].update(overrides.get(group["PropertyGroupId"], {}))
    path = home / "application_properties.json"
    path.write_text(json.dumps(groups))
    return path


def wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(1)
