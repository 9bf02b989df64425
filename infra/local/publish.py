"""Send generated records to their feeds: Kafka topics raw.<feed> and files in the S3 landing prefix.

With feed contracts, each feed's units are in its own format (infra.local.feed_encoding); without,
every feed is canonical JSON (one message per record, JSON Lines files).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.kafka import create_missing_topics
from infra.local.feed_encoding import EXTENSIONS, encode_unit, json_lines
from infra.local.synthetic import Generated
from schemas.contracts import FeedContract

TOPIC_PREFIX = "raw."
_PARTITIONS = 2
_REPLICATION = 1


class PublishError(RuntimeError):
    """Some records were not delivered; the message names how many and the first broker errors."""


@dataclass(frozen=True)
class PublishSummary:
    """What reached each destination: Kafka records per topic, landing records and object keys per feed."""

    kafka_records: dict[str, int] = field(default_factory=dict)
    landing_records: dict[str, int] = field(default_factory=dict)
    landing_objects: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """Records delivered, duplicates and invalid ones included."""
        return sum(self.kafka_records.values()) + sum(self.landing_records.values())


def publish(
    generated: Iterable[Generated],
    bootstrap: str,
    s3_client: Any,
    landing_bucket: str,
    landing_prefix: str = "feeds/",
    records_per_file: int = 500,
    *,
    contracts: Mapping[str, FeedContract] | None = None,
    now: datetime | None = None,
    flush_timeout_s: float = 60.0,
    partner_folders: Mapping[str, Path] | None = None,
    day_folder: str = "%Y/%m/%d",
) -> PublishSummary:
    """Send every record once; raise PublishError unless Kafka acknowledged all (acks=all, idempotent).

    Kafka records are keyed by record_id. Landing records are grouped per feed into objects of at
    most `records_per_file` lines, each written whole with one put_object, so a reader never sees a
    partial file, under `<landing_prefix><feed>/<now as day_folder>/` (a batch run's files: "%Y-%m-%d").
    Objects for a feed are written in generation order. Feeds in `partner_folders` are
    pulled from a partner's SFTP server: their files go to that server's folder instead, written as a
    partner's client does (a `.part` file, renamed when whole), and the SFTP puller lands them.
    """
    if records_per_file < 1:
        raise ValueError("records_per_file must be >= 1")
    from confluent_kafka import Producer  # heavy import only when something is published

    day = (now or datetime.now(UTC)).astimezone(UTC)
    errors: list[str] = []
    acked: dict[str, int] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err}")
        else:
            acked[msg.topic()] = acked.get(msg.topic(), 0) + 1

    config = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
    }
    producer: Any = None  # made on the first Kafka record, so landing-only runs never dial the broker
    known_topics: set[str] = set()
    batches: dict[str, list[bytes]] = {}
    landing_records: dict[str, int] = {}
    objects: list[str] = []
    sent = 0

    for g in generated:
        contract = (contracts or {}).get(g.feed)  # none: canonical JSON, a message or a line per record
        if g.transport == "kafka":
            topic = TOPIC_PREFIX + g.feed
            if topic not in known_topics:
                ensure_topics(bootstrap, [topic])
                known_topics.add(topic)
                producer = producer or Producer(config)
            unit = encode_unit(contract, [g.payload]) if contract else g.payload
            _produce(producer, topic, g.record_id.encode(), unit, on_delivery)
            sent += 1
        elif g.transport == "landing":
            if (contract is None or contract.format == "json") and (b"\n" in g.payload or b"\r" in g.payload):
                # One record per line is the landing contract; a raw newline would split a record in two.
                raise ValueError(f"record {g.record_id} of feed {g.feed} holds a raw newline")
            batch = batches.setdefault(g.feed, [])
            batch.append(g.payload)
            if len(batch) >= records_per_file:
                objects.append(_put(s3_client, landing_bucket, landing_prefix, g.feed, day, batch, contracts,
                                    (partner_folders or {}).get(g.feed), day_folder))
                landing_records[g.feed] = landing_records.get(g.feed, 0) + len(batch)
                batches[g.feed] = []
        else:
            raise ValueError(f"feed {g.feed}: unknown transport {g.transport!r}")

    for feed, batch in batches.items():
        if batch:
            objects.append(_put(s3_client, landing_bucket, landing_prefix, feed, day, batch, contracts,
                                (partner_folders or {}).get(feed), day_folder))
            landing_records[feed] = landing_records.get(feed, 0) + len(batch)

    remaining = producer.flush(flush_timeout_s) if producer is not None else 0
    delivered = sum(acked.values())
    if remaining or errors or delivered != sent:
        shown = "; ".join(errors[:5])
        raise PublishError(
            f"Kafka delivered {delivered} of {sent} records ({remaining} still queued after "
            f"{flush_timeout_s}s, {len(errors)} failed){': ' + shown if shown else ''}"
        )
    return PublishSummary(dict(acked), landing_records, tuple(objects))


def ensure_topics(bootstrap: str, topics: Iterable[str], timeout_s: float = 30.0) -> None:
    """Create any missing topic with 2 partitions and replication 1; existing topics are left alone."""
    from confluent_kafka import KafkaException

    names = list(topics)
    try:
        create_missing_topics(bootstrap, names, _PARTITIONS, _REPLICATION, timeout_s)
    except ConnectionError as exc:
        raise PublishError(f"cannot reach Kafka at {bootstrap} within {timeout_s}s: {exc}") from exc
    except KafkaException as exc:
        raise PublishError(f"cannot create topics {names}: {exc}") from exc


def _produce(producer: Any, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
    """Produce one record, waiting for queue space rather than failing when the local buffer is full."""
    for _ in range(600):
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.1)
    raise PublishError(f"producer queue stayed full for 60 s while sending to {topic}")


def _put(s3_client: Any, bucket: str, prefix: str, feed: str, day: datetime, payloads: list[bytes],
         contracts: Mapping[str, FeedContract] | None, partner_folder: Path | None = None,
         day_folder: str = "%Y/%m/%d") -> str:
    """Write one landed file whole (in the feed's format) and return its key, or its path in `partner_folder`."""
    contract = (contracts or {}).get(feed)
    body = encode_unit(contract, payloads) if contract else json_lines(payloads)
    extension = EXTENSIONS[contract.format] if contract else "jsonl"
    if partner_folder is not None:
        final = partner_folder / f"{feed}_{day:%Y%m%d}_{uuid.uuid4().hex[:12]}.{extension}"
        partial = final.with_name(final.name + ".part")
        partial.write_bytes(body)
        partial.rename(final)
        return str(final)
    key = f"{prefix}{feed}/{day.strftime(day_folder)}/{uuid.uuid4()}.{extension}"
    s3_client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/octet-stream")
    return key
