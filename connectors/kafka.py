"""Kafka: the raw.<feed> source and the transactional dead-letter sink.

Guarantees: the source's offsets live in Flink checkpoints, so after a restore it re-reads from the
last completed checkpoint. The dead-letter sink writes in Kafka transactions that commit when the
checkpoint holding them completes: a read_committed consumer sees each dead letter exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from connectors.sql import with_clause

if TYPE_CHECKING:
    from pyflink.table import StreamTableEnvironment

RAW_TABLE = "raw_kafka"
DLQ_TABLE = "dead_letters"



@dataclass(frozen=True)
class KafkaConfig:
    """Broker access and the topics the ingest job reads and writes."""

    bootstrap_servers: str
    raw_topic_pattern: str
    dlq_topic: str
    group_id: str
    transaction_timeout_ms: int
    # Bounded: read up to the offsets current at start, then finish (tests and benchmarks).
    bounded: bool = False


def create_raw_source(t_env: StreamTableEnvironment, cfg: KafkaConfig) -> str:
    """Register the raw topics (by pattern) as a table of bytes with topic/partition/offset."""
    options = {
        "connector": "kafka",
        "topic-pattern": cfg.raw_topic_pattern,
        "properties.bootstrap.servers": cfg.bootstrap_servers,
        "properties.group.id": cfg.group_id,
        "properties.isolation.level": "read_committed",
        "scan.startup.mode": "group-offsets",
        "properties.auto.offset.reset": "earliest",
        "scan.topic-partition-discovery.interval": "5 s",
        "format": "raw",
    }
    if cfg.bounded:
        options["scan.bounded.mode"] = "latest-offset"
    t_env.execute_sql(
        f"""CREATE TEMPORARY TABLE {RAW_TABLE} (
              payload BYTES,
              topic STRING NOT NULL METADATA VIRTUAL,
              `partition` INT NOT NULL METADATA VIRTUAL,
              `offset` BIGINT NOT NULL METADATA VIRTUAL
            ) {with_clause(options)}"""
    )
    return RAW_TABLE


def create_dead_letter_sink(t_env: StreamTableEnvironment, cfg: KafkaConfig, job_name: str) -> str:
    """Register the dead-letter topic as an exactly-once (transactional) sink keyed by dead-letter id."""
    options = {
        "connector": "kafka",
        "topic": cfg.dlq_topic,
        "properties.bootstrap.servers": cfg.bootstrap_servers,
        "properties.transaction.timeout.ms": str(cfg.transaction_timeout_ms),
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"{job_name}-dlq",
        "key.format": "raw",
        "key.fields": "dead_letter_id",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    t_env.execute_sql(
        f"""CREATE TEMPORARY TABLE {DLQ_TABLE} (
              dead_letter_id STRING,
              body STRING
            ) {with_clause(options)}"""
    )
    return DLQ_TABLE
