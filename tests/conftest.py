"""Shared fixtures: the PyFlink process environment, per-test isolated pipeline config, the local stack."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local import stack as local_stack
from infra.local.settings import StackSettings

from jobs.cli import local_aws_environment

# Placeholders for the local S3 API (moto accepts any key); never real credentials.
local_aws_environment()


@pytest.fixture(scope="session")
def flink_process_env() -> None:
    """Environment the PyFlink gateway needs; must be in place before its JVM starts."""
    from jobs.runtime import prepare_process_environment

    prepare_process_environment()


@pytest.fixture
def run_id() -> str:
    """A short unique id, so every test gets its own topics, prefixes and tables."""
    return uuid.uuid4().hex[:8]


def isolated_config(run_id: str, home: Path):  # type: ignore[no-untyped-def]
    """The local config with every topic, prefix, table and checkpoint dir unique to one run."""
    from jobs.config import LOCAL_PROPERTIES, load_ingest_config, read_property_groups

    cfg = load_ingest_config(read_property_groups(LOCAL_PROPERTIES))
    return dataclasses.replace(
        cfg,
        kafka=dataclasses.replace(cfg.kafka, raw_topic_pattern=rf"raw\.t{run_id}_.*", dlq_topic=f"dlq.t{run_id}",
                                  group_id=f"ingest-t{run_id}"),
        landing=dataclasses.replace(cfg.landing, path=f"s3://medistream-landing/t{run_id}/"),
        iceberg=dataclasses.replace(cfg.iceberg, table_suffix=f"_t{run_id}"),
        archive=dataclasses.replace(cfg.archive, path=f"s3://medistream-archive/t{run_id}/",
                                    dead_letters_path=f"s3://medistream-archive/t{run_id}-dead-letters/"),
        curated=dataclasses.replace(cfg.curated, snowflake_topic=f"curated.t{run_id}.snowflake",
                                    partner_topic_prefix=f"curated.t{run_id}.partner."),
        checkpoints=dataclasses.replace(cfg.checkpoints, directory=(home / "checkpoints").as_uri(), interval_ms=2000),
        reference=dataclasses.replace(cfg.reference, path=f"s3://medistream-reference/t{run_id}/"),
        feeds=dataclasses.replace(cfg.feeds, contracts_dir=str(isolated_contracts(run_id, home))),
    )


def isolated_contracts(run_id: str, home: Path) -> Path:
    """Every shipped feed contract under a run-unique feed name (t<run_id>_<feed>): new feeds by file alone."""
    import yaml

    from schemas.contracts import FEEDS_DIR

    folder = home / "feeds"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for path in FEEDS_DIR.glob("*.yaml"):
            document = yaml.safe_load(path.read_text())
            document["feed"] = f"t{run_id}_{document['feed']}"
            (folder / f"{document['feed']}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return folder


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
