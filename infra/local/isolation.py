"""Run-unique pipeline configuration: every topic, prefix, table, checkpoint folder and contract of one run.

Tests, the chaos run and benchmarks share one local stack; each run gets its own names so runs never
see each other's data.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


def isolated_config(run_id: str, home: Path) -> Any:
    """The local config with every topic, prefix, table and checkpoint dir unique to one run."""
    from connectors.properties import LOCAL_PROPERTIES, load_ingest_config, read_property_groups

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


def bounded(cfg: Any) -> Any:
    """The configuration with every source bounded (Kafka to the offsets at start, one pass over the landing and
    reference prefixes): the job ends once it has read what was there."""
    return dataclasses.replace(cfg, kafka=dataclasses.replace(cfg.kafka, bounded=True),
                               landing=dataclasses.replace(cfg.landing, monitor_interval=""),
                               reference=dataclasses.replace(cfg.reference, monitor_interval=""))


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



def write_properties(run_id: str, home: Path, audit_chain: str | None = None) -> Path:
    """The local properties file with every resource unique to this run (and the audit log's chain, if given)."""
    from connectors.properties import LOCAL_PROPERTIES

    groups = json.loads(LOCAL_PROPERTIES.read_text())
    cfg = isolated_config(run_id, home)
    overrides = {
        "kafka": {"raw.topic.pattern": cfg.kafka.raw_topic_pattern, "dlq.topic": cfg.kafka.dlq_topic,
                  "group.id": cfg.kafka.group_id},
        "landing": {"path": cfg.landing.path},
        "batch": {"path": f"s3://medistream-landing/t{run_id}-batch/"},
        "iceberg": {"table.suffix": cfg.iceberg.table_suffix},
        "archive": {"path": cfg.archive.path, "dead.letters.path": cfg.archive.dead_letters_path},
        "curated": {"snowflake.topic": cfg.curated.snowflake_topic,
                    "partner.topic.prefix": cfg.curated.partner_topic_prefix},
        "checkpoints": {"dir": cfg.checkpoints.directory, "interval.ms": "2000"},
        "runtime": {"job.name": f"job-{run_id}"},
        "snowflake": {"emulator.path": str(home / "snowflake.sqlite"), "consumer.group.id": f"snowflake-t{run_id}"},
        "reference": {"path": cfg.reference.path, "monitor.interval": "2 s"},
        "feeds": {"contracts.dir": cfg.feeds.contracts_dir},
        "audit": {"chain": audit_chain} if audit_chain else {},
    }
    for group in groups:
        group["PropertyMap"].update(overrides.get(group["PropertyGroupId"], {}))
    path = home / "application_properties.json"
    path.write_text(json.dumps(groups))
    return path
