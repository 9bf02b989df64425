"""Replaying dead letters' source units: the ledger, the Kafka and S3 re-injection, idempotency.

See tools/dlq.py for the guarantees; this module does the writing (`medistream dlq replay`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.iceberg import split_s3_url as split_s3
from connectors.kafka import client_config, watermark_offsets
from tools.dlq_units import (
    NOT_REPLAYABLE,
    REPLAY_FOLDER,
    REPLAY_HEADER,
    REPLAYED,
    SKIPPED,
    WOULD_REPLAY,
    DlqConfig,
    DlqError,
    Unit,
    _read_topic,
    _when,
)


def replay_target(landing_path: str, path: str, unit_digest: str, attempt: int) -> str | None:
    """Where a landed file is copied to be read again; None if it is not under <landing>/<feed>/."""
    root_bucket, root_key = split_s3(landing_path.rstrip("/") + "/")
    bucket, key = split_s3(path)
    relative = key[len(root_key):] if bucket == root_bucket and key.startswith(root_key) else ""
    feed, _, rest = relative.partition("/")
    if not feed or not rest:
        return None
    folder = unit_digest if attempt == 1 else f"{unit_digest}-{attempt}"
    return f"s3://{root_bucket}/{root_key}{feed}/{REPLAY_FOLDER}/{folder}/{key.rsplit('/', 1)[-1]}"


def latest_ledger(entries: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The newest ledger entry per unit pointer (the ledger is read in order)."""
    return {str(e["unit"]): e for e in entries if "unit" in e}


def ensure_ledger_topic(cfg: DlqConfig) -> None:
    """Create the ledger topic, compacted, if it does not exist."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    from connectors.kafka import create_missing_topics

    if create_missing_topics(cfg.bootstrap_servers, [cfg.ledger_topic], partitions=1, timeout_s=cfg.timeout_s,
                             auth=cfg.kafka_auth):
        # create_missing_topics takes no topic configs: compaction is set right after creation.
        entry = ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource(ResourceType.TOPIC, cfg.ledger_topic, incremental_configs=[entry])
        admin = AdminClient(client_config(cfg.bootstrap_servers, cfg.kafka_auth))
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(timeout=cfg.timeout_s)


@dataclass(frozen=True)
class Outcome:
    """What happened to one unit."""

    unit: Unit
    status: str
    note: str


class _Replayer:
    """Fetches units and writes their replays; clients are made on first use and closed at the end."""

    def __init__(self, cfg: DlqConfig, dry_run: bool) -> None:
        self.cfg, self.dry_run = cfg, dry_run
        self._consumer: Any = None
        self._producer: Any = None
        self._s3: Any = None

    def close(self) -> None:
        """Close the consumer (the producer holds nothing uncommitted by then)."""
        if self._consumer is not None:
            self._consumer.close()

    def kafka(self, unit: Unit, attempt: int) -> Outcome:
        """Fetch the exact message, check it, and produce it again with the replay header."""
        topic, partition, offset = str(unit.source["topic"]), int(unit.source["partition"]), int(unit.source["offset"])
        message, why = self._fetch(topic, partition, offset)
        if message is None:
            return Outcome(unit, NOT_REPLAYABLE, why)
        digest = hashlib.sha256(message.value() or b"").hexdigest()
        if unit.whole_unit_digests - {digest}:
            return Outcome(unit, NOT_REPLAYABLE, f"the message at {topic}/{partition}@{offset} is not the one "
                                                 "that was dead-lettered (SHA-256 differs)")
        if self.dry_run:
            return Outcome(unit, WOULD_REPLAY, f"to {topic}/{partition}")
        headers = [(k, v) for k, v in (message.headers() or []) if k != REPLAY_HEADER]
        headers.append((REPLAY_HEADER, ",".join(unit.dead_letter_ids).encode()))
        raw = {"topic": topic, "partition": partition, "key": message.key(), "value": message.value(),
               "headers": headers}
        return Outcome(unit, REPLAYED, f"-> {self._record(unit, attempt, raw=raw)}")

    def file(self, unit: Unit, attempt: int) -> Outcome:
        """Copy the landed file under <landing>/<feed>/replay/, once per unit and attempt."""
        path = str(unit.source["path"])
        target = replay_target(self.cfg.landing_path, path, unit.digest, attempt)
        if target is None:
            return Outcome(unit, NOT_REPLAYABLE, f"not under the landing prefix {self.cfg.landing_path}<feed>/")
        if not self._exists(path):
            return Outcome(unit, NOT_REPLAYABLE, "the file is no longer in the landing bucket")
        if self._exists(target):
            if not self.dry_run:
                self._record(unit, attempt, target=target)
            return Outcome(unit, SKIPPED, f"{target} already exists (an earlier replay); not written twice")
        if self.dry_run:
            return Outcome(unit, WOULD_REPLAY, f"to {target}")
        (bucket, key), (target_bucket, target_key) = split_s3(path), split_s3(target)
        self._s3_client().copy_object(CopySource={"Bucket": bucket, "Key": key}, Bucket=target_bucket, Key=target_key)
        self._record(unit, attempt, target=target)
        return Outcome(unit, REPLAYED, f"-> {target}")

    def _fetch(self, topic: str, partition: int, offset: int) -> tuple[Any, str]:
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        if self._consumer is None:
            self._consumer = Consumer(client_config(self.cfg.bootstrap_servers, self.cfg.kafka_auth, **{
                "group.id": "medistream-dlq-replay", "isolation.level": "read_committed", "enable.auto.commit": False,
                "auto.offset.reset": "error",
            }))
        consumer, timeout = self._consumer, self.cfg.timeout_s
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None or partition not in meta.partitions:
            return None, f"{topic} partition {partition} does not exist any more"
        low, high = watermark_offsets(consumer, TopicPartition(topic, partition), timeout)
        if offset < low:
            return None, f"dropped by the retention of {topic} (partition {partition} now starts at offset {low})"
        if offset >= high:
            return None, f"offset {offset} is past the end of {topic}/{partition} ({high}): was the topic recreated?"
        consumer.assign([TopicPartition(topic, partition, offset)])
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() == KafkaError._AUTO_OFFSET_RESET:
                        return None, f"dropped by the retention of {topic} while reading it"
                    raise DlqError(f"reading {topic}/{partition}@{offset}: {message.error()}")
                if (message.topic(), message.partition()) != (topic, partition):
                    continue  # prefetched from an earlier assignment
                if message.offset() != offset:
                    return None, f"no message at {topic}/{partition}@{offset} any more (compacted or aborted)"
                return message, ""
            raise DlqError(f"timed out reading {topic}/{partition}@{offset}")
        finally:
            consumer.unassign()

    def _record(self, unit: Unit, attempt: int, *, raw: Mapping[str, Any] | None = None, target: str = "") -> str:
        """In one transaction: produce the raw message (if any) and the unit's ledger entry; return the target."""
        producer = self._transactional_producer()
        producer.begin_transaction()
        try:
            if raw is not None:
                delivered: list[Any] = []
                producer.produce(**raw, on_delivery=lambda err, msg: delivered.append((err, msg)))
                producer.flush(self.cfg.timeout_s)
                if not delivered or delivered[0][0] is not None:
                    raise DlqError(f"producing to {raw['topic']}: {delivered[0][0] if delivered else 'timed out'}")
                message = delivered[0][1]
                target = f"{message.topic()}/{message.partition()}@{message.offset()}"
            entry = {"unit": unit.pointer, "kind": unit.kind, "attempt": attempt, "target": target,
                     "dead_letter_ids": unit.dead_letter_ids, "replayed_at_ms": int(time.time() * 1000)}
            producer.produce(self.cfg.ledger_topic, key=unit.pointer.encode(), value=orjson.dumps(entry))
            producer.commit_transaction(self.cfg.timeout_s)
        except BaseException:
            producer.abort_transaction(self.cfg.timeout_s)
            raise
        return target

    def _transactional_producer(self) -> Any:
        from confluent_kafka import Producer

        if self._producer is None:
            # One transactional id per ledger: a second concurrent replay fences the first.
            self._producer = Producer(client_config(self.cfg.bootstrap_servers, self.cfg.kafka_auth, **{
                "acks": "all", "enable.idempotence": True,
                "transactional.id": f"medistream-dlq-replay.{self.cfg.ledger_topic}"}))
            self._producer.init_transactions(self.cfg.timeout_s)
        return self._producer

    def _s3_client(self) -> Any:
        import boto3
        from botocore.config import Config

        if self._s3 is None:
            s3 = self.cfg.s3
            self._s3 = boto3.client("s3", endpoint_url=s3.endpoint or None, region_name=s3.region, config=Config(
                connect_timeout=5, read_timeout=60, retries={"max_attempts": 3},
                s3={"addressing_style": "path" if s3.path_style_access else "auto"}))
        return self._s3

    def _exists(self, url: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = split_s3(url)
        try:
            self._s3_client().head_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True


def replay_units(cfg: DlqConfig, units: Sequence[Unit], *, force: bool, dry_run: bool) -> list[Outcome]:
    """Replay each unit once (skipping those in the ledger unless force); dry_run writes nothing.

    Units of kind "partner" (partner dead letters) go through tools/dlq_partner.py, in topic order.
    """
    ledger = latest_ledger(_read_topic(cfg, cfg.ledger_topic))
    if not dry_run and units:
        ensure_ledger_topic(cfg)
    replayer = _Replayer(cfg, dry_run)
    outcomes = []
    partner = None
    to_partners = [u for u in units if u.kind == "partner" and (force or u.pointer not in ledger)]
    if to_partners:  # partner dead letters (tools/dlq_partner.py): found on their curated topic first, read-only
        from tools.dlq_partner import PartnerReplay

        partner = PartnerReplay(cfg, to_partners, replayer._record, dry_run)
        units = partner.ordered(units)
    try:
        for unit in units:
            previous = ledger.get(unit.pointer)
            if previous and not force:
                outcomes.append(Outcome(unit, SKIPPED, f"already replayed at {_when(previous.get('replayed_at_ms'))}"
                                                       f" -> {previous.get('target')}; --force replays again"))
            elif unit.kind in ("kafka", "file", "partner"):
                attempt = int(previous.get("attempt", 1)) + 1 if previous else 1
                if unit.kind == "partner" and partner is not None:
                    outcomes.append(Outcome(unit, *partner.replay(unit, attempt)))
                elif unit.kind == "kafka":
                    outcomes.append(replayer.kafka(unit, attempt))
                else:
                    outcomes.append(replayer.file(unit, attempt))
            else:
                outcomes.append(Outcome(unit, NOT_REPLAYABLE, "the dead letter has no complete source pointer"))
    finally:
        replayer.close()
    return outcomes
