"""Archive: every accepted record in full, encrypted, as Avro files by feed and day.

Per record: the protected form (`payload`: tokens, masks, field ciphertexts; searchable without
keys) and the whole canonical record sealed under its domain's KMS data key (`sealed`), which only
authorized re-identification opens.

Built on Flink's FileSink (the filesystem connector): part files are written in progress and
committed when the checkpoint that holds them completes, so each record lands in exactly one
committed file. The archive bucket is encrypted at rest with SSE-KMS (see infra/local).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from connectors.sql import with_clause

if TYPE_CHECKING:
    from pyflink.table import StreamTableEnvironment

ARCHIVE_TABLE = "raw_archive"



@dataclass(frozen=True)
class ArchiveConfig:
    """Raw archive location; files roll on every checkpoint."""

    path: str


def create_archive_sink(t_env: StreamTableEnvironment, cfg: ArchiveConfig) -> str:
    """Register the archive as a partitioned, deflate-compressed Avro sink."""
    options = {
        "connector": "filesystem",
        "path": cfg.path,
        "format": "avro",
        "avro.codec": "deflate",
        "sink.partition-commit.policy.kind": "success-file",
    }
    t_env.execute_sql(
        f"""CREATE TEMPORARY TABLE {ARCHIVE_TABLE} (
              record_id STRING,
              record_type STRING,
              sent_at_ms BIGINT,
              source STRING,
              `position` STRING,
              business_key STRING,
              original_key STRING,
              enrichment STRING,
              payload STRING,
              sealed STRING,
              feed STRING,
              dt STRING
            ) PARTITIONED BY (feed, dt) {with_clause(options)}"""
    )
    return ARCHIVE_TABLE
