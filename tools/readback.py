"""Read the ingest job's sinks back: Iceberg rows, archived records and dead letters, curated topics.

Used by the demo summary and by the integration, kill and bench runs to compare every sink with
the generator's ground truth by record id. Readers only see committed data: Iceberg snapshots,
archive part files finalised on checkpoint, and Kafka messages under read_committed.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from connectors.iceberg import (
    IcebergConfig,
    S3Config,
    pyiceberg_catalog,
    split_s3_url,
)
from connectors.kafka import PLAINTEXT_AUTH, KafkaAuth, client_config, watermark_offsets
from connectors.properties import IngestConfig
from connectors.s3 import s3_client
from udfs.dedup import Digest


@dataclass(frozen=True)
class SinkCounts:
    """What the sinks hold, by record id (a Counter, so duplicates show)."""

    iceberg_claims: Counter[str]
    archived: Counter[str]
    dead_letters: Counter[str]
    iceberg_claim_keys: Counter[str]  # by business key (every format carries one; X12 has no record id)
    archived_keys: Counter[str]
    archived_feeds: Counter[str]
    archive_objects: int
    dead_letter_reasons: dict[str, str]  # read-back key -> "stage.reason_code"
    # Business keys per routed sink: "iceberg:<record type>", "snowflake", "partner:<id>" (curated topics).
    routed: dict[str, Counter[str]]
    # Dead-letter ids in each of their three sinks: the topic, the archive and the Iceberg table.
    dead_letter_ids: dict[str, Counter[str]]
    # The fraud signals in each of their sinks ("iceberg", "operational"): (id, rule, provider, day, evidence keys).
    fraud_signals: dict[str, list[tuple[str, str, str | None, str | None, tuple[str, ...]]]] = field(
        default_factory=dict)


def iceberg_table(ice: IcebergConfig, s3: S3Config, table: str) -> Any:
    """Load an Iceberg table with pyiceberg from the same catalog the job writes (JDBC or Glue)."""
    return pyiceberg_catalog(ice, s3).load_table(f"{ice.namespace}.{table}")


def iceberg_column(cfg: IngestConfig, name: str, column: str) -> Counter[str]:
    """One column's values in a table's current snapshot (empty if there is no table yet)."""
    from pyiceberg.exceptions import NoSuchTableError

    try:
        table = iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.table(name))
    except NoSuchTableError:
        return Counter()
    rows = table.scan(selected_fields=(column,)).to_arrow()
    return Counter(rows.column(column).to_pylist())


def iceberg_claim_ids(cfg: IngestConfig, column: str = "record_id") -> Counter[str]:
    """Record ids (or another column) in the claims table's current snapshot (empty if there is no table yet)."""
    return iceberg_column(cfg, "claims", column)


def _committed_parts(s3: Any, path: str) -> Iterator[dict[str, Any]]:
    """The S3 listing entries (Key, Size, ...) of every committed part file under an archive path."""
    bucket, prefix = split_s3_url(path)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].rsplit("/", 1)[-1].startswith("part-"):  # not _SUCCESS; in-progress files start "."
                yield obj


def _archive_parts(cfg: IngestConfig, path: str) -> Iterator[tuple[str, Any]]:
    """(feed, fastavro reader) of every committed part file under an archive path."""
    import fastavro

    s3 = s3_client(cfg.s3)
    bucket, _prefix = split_s3_url(path)
    for obj in _committed_parts(s3, path):
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        # feed is a partition column: it lives in the path (feed=<name>/dt=<day>/), not in the file.
        feed = next((part[5:] for part in obj["Key"].split("/") if part.startswith("feed=")), "")
        yield feed, fastavro.reader(io.BytesIO(body))


def archive_bytes(cfg: IngestConfig) -> int:
    """The bytes of the records archive's committed files (what S3 stores, and bills, for seven years)."""
    return sum(obj["Size"] for obj in _committed_parts(s3_client(cfg.s3), cfg.archive.path))


def _archive_files(cfg: IngestConfig, path: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(feed, records) of every committed part file under an archive path."""
    for feed, reader in _archive_parts(cfg, path):
        yield feed, [dict(row) for row in reader if isinstance(row, dict)]


def archive_codecs(cfg: IngestConfig) -> Counter[str]:
    """How many committed files of the archive (records and dead letters) each compression codec wrote."""
    return Counter(reader.codec for path in (cfg.archive.path, cfg.archive.dead_letters_path)
                   for _feed, reader in _archive_parts(cfg, path))


def archived_ids(cfg: IngestConfig) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """Record ids, business keys and feeds in committed archive files, and how many files there are."""
    ids: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    feeds: Counter[str] = Counter()
    files = 0
    for feed, records in _archive_files(cfg, cfg.archive.path):
        files += 1
        for record in records:
            ids[record["record_id"]] += 1
            keys[record["business_key"]] += 1
            feeds[feed] += 1
    return ids, keys, feeds, files


def archived_dead_letter_ids(cfg: IngestConfig) -> Counter[str]:
    """Dead-letter ids in committed dead-letter archive files."""
    return Counter(r["dead_letter_id"] for _feed, records in _archive_files(cfg, cfg.archive.dead_letters_path)
                   for r in records)


def committed_dead_letters(bootstrap_servers: str, topic: str, timeout_s: float = 30.0,
                           auth: KafkaAuth = PLAINTEXT_AUTH) -> list[dict[str, Any]]:
    """Every committed message on the dead-letter topic (or any JSON topic), from the beginning to its end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(client_config(bootstrap_servers, auth, **{
        "group.id": "medistream-readback", "isolation.level": "read_committed", "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }))
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or not metadata.partitions:
            return []
        # With read_committed the high watermark is the last stable offset: read up to it.
        # Empty partitions are skipped: a consumer gets no position on them, so none could "end".
        ends: dict[int, int] = {}
        for p in metadata.partitions:
            low, high = watermark_offsets(consumer, TopicPartition(topic, p), timeout_s)
            if high > low:
                ends[p] = high
        if not ends:
            return []
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends]
        consumer.assign(partitions)
        letters: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        # Positions, not message offsets: transaction markers take offsets but are never delivered.
        while any(tp.offset < ends[tp.partition] for tp in consumer.position(partitions)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"dead-letter topic {topic} stopped short of its end offsets")
            message = consumer.poll(timeout=1.0)
            if message is None:
                continue
            if message.error():
                raise RuntimeError(f"reading {topic}: {message.error()}")
            letters.append(orjson.loads(message.value() or b"null"))
        return letters
    finally:
        consumer.close()


def dead_letter_key(letter: dict[str, Any]) -> str:
    """The id a dead letter is compared by: its record id, else its own bytes' hash, else its unit's."""
    return letter.get("record_id") or f"sha256:{letter.get('item_sha256') or letter['payload_sha256']}"


def routed_keys(cfg: IngestConfig) -> dict[str, Counter[str]]:
    """Business keys in every routed sink: the Iceberg table of each record type and every curated topic."""
    from connectors.iceberg import TABLE_FOR_TYPE
    from jobs.topics import curated_routes

    routed = {f"iceberg:{kind}": iceberg_column(cfg, table, "business_key") for kind, table in TABLE_FOR_TYPE.items()}
    for sink, topic in curated_routes(cfg):
        messages = committed_dead_letters(cfg.kafka.bootstrap_servers, topic)
        routed[sink] = Counter(m["business_key"] for m in messages)
    feeds = operational_feeds(cfg)
    if feeds:  # the store's tables are shared: only the rows of this configuration's feeds
        from connectors.operational import current_keys

        routed |= {f"operational:{kind}": keys for kind, keys in current_keys(cfg, feeds).items()}
    return routed


def operational_feeds(cfg: IngestConfig) -> list[str]:
    """The feeds whose contracts route to the operational store."""
    from connectors.operational import ROUTE
    from schemas.contracts import load_contracts

    return sorted(feed for feed, c in load_contracts(cfg.feeds.directory).items() if any(r.sink == ROUTE
                                                                                          for r in c.routes))


def read_sinks(cfg: IngestConfig) -> SinkCounts:
    """Everything the sinks hold right now."""
    archived, archived_keys, archived_feeds, objects = archived_ids(cfg)
    letters = committed_dead_letters(cfg.kafka.bootstrap_servers, cfg.kafka.dlq_topic)
    return SinkCounts(
        routed=routed_keys(cfg),
        dead_letter_ids={
            "topic": Counter(letter["dead_letter_id"] for letter in letters),
            "archive": archived_dead_letter_ids(cfg),
            "iceberg": iceberg_column(cfg, "dead_letters", "dead_letter_id"),
        },
        iceberg_claims=iceberg_claim_ids(cfg),
        archived=archived,
        iceberg_claim_keys=iceberg_claim_ids(cfg, "business_key"),
        archived_keys=archived_keys,
        archived_feeds=archived_feeds,
        dead_letters=Counter(dead_letter_key(letter) for letter in letters),
        archive_objects=objects,
        dead_letter_reasons={
            dead_letter_key(letter): f"{letter['stage']}.{letter['reason_code']}" for letter in letters
        },
        fraud_signals=fraud_signals(cfg),
    )


Signal = tuple[str, str, str | None, str | None, tuple[str, ...]]  # (id, rule, provider NPI, day, evidence keys)
Pattern = tuple[frozenset[str], str | None, str | None]  # infra.local.ground_truth.Pattern


def fraud_signals(cfg: IngestConfig) -> dict[str, list[Signal]]:
    """The signals of this configuration's feeds in the Iceberg table fraud_signals and, where the operational
    store is in use, in ops.fraud_signals (a store shared by every run)."""
    from pyiceberg.exceptions import NoSuchTableError

    from connectors.operational import ROUTE
    from schemas.contracts import load_contracts

    contracts = load_contracts(cfg.feeds.directory)
    feeds = set(contracts)

    def parsed(rows: list[tuple[Any, ...]]) -> list[Signal]:
        return [(sid, rule, npi, str(day) if day is not None else None, tuple(keys.split(",")) if keys else ())
                for sid, rule, npi, day, keys, feed in rows if feed in feeds]

    found: dict[str, list[Signal]] = {}
    columns = ("signal_id", "rule", "provider_npi", "service_date", "evidence_keys", "feed")
    try:
        table = iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.table("fraud_signals"))
        rows = table.scan(selected_fields=columns).to_arrow().to_pylist()
        found["iceberg"] = parsed([tuple(r[c] for c in columns) for r in rows])
    except NoSuchTableError:
        found["iceberg"] = []
    if any(route.sink == ROUTE for contract in contracts.values() for route in contract.routes):
        from connectors.operational import signal_rows

        found["operational"] = parsed(signal_rows(cfg))
    return found


def _pattern_id(rule: str, pattern: Pattern) -> str:
    keys, provider, day = pattern
    return f"{rule}/{min(keys)}/{provider or '-'}/{day or '-'}"


def expected_signals(patterns: dict[str, list[Pattern]]) -> Counter[str]:
    """One count per pattern of the ground truth (infra.local.ground_truth.FraudTruth), by rule, key, provider, day."""
    return Counter(_pattern_id(rule, pattern) for rule, found in patterns.items() for pattern in found)


def matched_signals(patterns: dict[str, list[Pattern]], signals: list[Signal], run_keys: set[str]) -> Counter[str]:
    """The signals of this run (an evidence key among `run_keys`) by the pattern each belongs to (the same provider
    and day, its evidence within the pattern's keys), named as expected_signals names them; `<rule>/unexpected/<id>`
    for a signal of no pattern."""
    index: dict[tuple[str, str, str | None, str | None], list[Pattern]] = {}
    for rule, found in patterns.items():
        for pattern in found:
            for key in pattern[0]:
                index.setdefault((rule, key, pattern[1], pattern[2]), []).append(pattern)
    held: Counter[str] = Counter()
    for sid, rule, provider, day, evidence in signals:
        if not run_keys.intersection(evidence):
            continue
        within = [p for p in index.get((rule, evidence[0], provider, day), ()) if p[0].issuperset(evidence)]
        held[_pattern_id(rule, within[0]) if within else f"{rule}/unexpected/{sid}"] += 1
    return held


def linkage_digest(cfg: IngestConfig) -> Digest:
    """The job's keyed business-key digest, from the stack's token-key secret (demo and test oracles only)."""
    from connectors.kms import configured_token_keys
    from udfs.phi.tokens import Tokenizer

    return Tokenizer(configured_token_keys(cfg.phi)).linkage


def covered(found: Counter[str], wanted: Counter[str]) -> int:
    """How many of the wanted records are present (a duplicate is not counted twice)."""
    return sum(min(found[k], v) for k, v in wanted.items())


def compare(expected: Counter[str], held: Counter[str]) -> dict[str, int]:
    """Expected vs held counts of one sink, by key."""
    return {"expected": sum(expected.values()), "held": sum(held.values()),
            "lost": sum((expected - held).values()), "duplicated": sum((held - expected).values())}


def compare_sinks(expected: dict[str, Any], sinks: SinkCounts) -> dict[str, dict[str, int]]:
    """compare() for every sink against expected_outcome(); archived and table dead letters against the topic's."""
    found = {"iceberg claims": compare(expected["claims"], sinks.iceberg_claim_keys),
             "archive": compare(expected["archived"], sinks.archived_keys),
             "dead letters": compare(expected["dead_letters"], sinks.dead_letters)}
    for sink, keys in expected["routed"].items():
        found[sink] = compare(keys, sinks.routed.get(sink, Counter()))
    for where, ids in sinks.dead_letter_ids.items():
        found[f"dead letters ({where})"] = compare(Counter(sinks.dead_letter_ids["topic"]), ids)
    return found


def inexact(found: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The sinks of compare_sinks() that lost or duplicated a record, or hold another count than expected."""
    return {sink: c for sink, c in found.items() if c["lost"] or c["duplicated"] or c["expected"] != c["held"]}
