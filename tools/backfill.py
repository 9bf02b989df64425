"""`medistream backfill`: re-read a past range of one feed through the running ingest job, delivering nothing twice.

    medistream backfill --actor NAME --role ROLE --reason TEXT --feed F --from T1 --to T2 [--rate N] [--dry-run]

Every unit of feed F that arrived in [T1, T2) is copied back into the job's inputs, at most N units a
second (messages or files): each message on raw.F whose Kafka timestamp is in the range (produced again
to its partition with its key, headers and timestamp, plus the header `medistream-origin` naming it),
and each file under <landing>/F/ last modified in the range (copied to
<landing>/F/backfill/<run>/<its modified ms>/<its key>). The job reads a copy as the unit it copies
(jobs/ingest.py): same record ids, dedup keys and dead-letter ids. So (decision 0024):
- a record already delivered is dropped by the job's dedup stage (it remembers `feeds.dedup.ttl`);
- a dead letter already written is dropped by the dead-letter dedup;
- what was never delivered (a record refused by a contract fixed since, a correction that never made it)
  flows through every sink once, corrections as corrections.
The job's own exactly-once holds for the copies as for any input, so a crashed backfill is re-run as is.

Refused, changing nothing: a range that is empty or ends in the future, one older than the dedup memory,
one Kafka no longer fully holds, an unknown feed, a second backfill of the same feed while one runs
(a lease in DynamoDB), a role without `backfill` (schemas/access/operations.yaml). The command is
audited before it starts and again with its counts when it ends. It prints progress on stderr and a JSON
summary on stdout; no payload is ever printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.audit import load_audit_settings, open_audit_log
from connectors.iceberg import split_s3_url
from connectors.kafka import client_config, watermark_offsets
from connectors.lineage.datasets import Dataset, kafka_namespace, url_dataset
from connectors.properties import (
    IngestConfig,
    default_properties_path,
    duration_ms,
    load_ingest_config,
    read_property_groups,
)
from schemas.contracts import FEEDS_DIR, load_contracts
from tools import lineage
from tools.dlq_units import iso
from tools.job_control import Operator, authorize
from tools.job_interface import JobControlError
from tools.operation_lease import take_lease
from udfs.source import BACKFILL_FOLDER, ORIGIN_HEADER, RAW_TOPIC_PREFIX, backfill_key, origin_header

BATCH = 200  # messages per Kafka transaction


class BackfillError(JobControlError):
    """A refusal or failure the operator reads: one line, PHI-free."""


@dataclass(frozen=True)
class Range:
    """A feed and a half-open range of epoch milliseconds [start_ms, end_ms)."""

    feed: str
    start_ms: int
    end_ms: int

    def describe(self) -> str:
        """The range as the operator wrote it, in UTC."""
        return f"{self.feed} [{iso(self.start_ms)}, {iso(self.end_ms)})"


def parse_time(text: str) -> int:
    """An ISO 8601 time with a zone ("2026-12-04T10:00:00Z", "...+01:00") as epoch milliseconds."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BackfillError(f"{text!r} is not an ISO 8601 time (e.g. 2026-12-04T10:00:00Z)") from None
    if when.tzinfo is None:
        raise BackfillError(f"{text!r} has no time zone: write it in UTC with a Z, or with its offset")
    return int(when.timestamp() * 1000)


def check_range(rng: Range, now_ms: int, dedup_ttl_ms: int, feeds: set[str]) -> None:
    """Refuse a range the job cannot backfill without delivering twice, or that names nothing."""
    if rng.feed not in feeds:
        raise BackfillError(f"no feed {rng.feed!r} (feeds: {', '.join(sorted(feeds))})")
    if rng.start_ms >= rng.end_ms:
        raise BackfillError(f"--from must be before --to ({iso(rng.start_ms)} is not before {iso(rng.end_ms)})")
    if rng.end_ms > now_ms:
        raise BackfillError(f"--to {iso(rng.end_ms)} is in the future (now {iso(now_ms)})")
    if rng.start_ms < now_ms - dedup_ttl_ms:
        raise BackfillError(
            f"--from {iso(rng.start_ms)} is older than the job's dedup memory (feeds.dedup.ttl, "
            f"{dedup_ttl_ms // 86_400_000} d, back to {iso(now_ms - dedup_ttl_ms)}): records delivered then "
            "would be delivered again")


@dataclass
class Counts:
    """What one backfill read and copied (no content)."""

    messages: int = 0
    files: int = 0
    skipped_copies: int = 0
    partitions: dict[str, list[int]] = field(default_factory=dict)  # "p": [start offset, end offset]


class Throttle:
    """At most `rate` units a second on average (no burst): the live job's latency comes first."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise BackfillError("--rate must be positive")
        self.interval, self.clock, self.sleep = 1.0 / rate, clock, sleep
        self.next_at: float | None = None

    def wait(self) -> None:
        """Block until the next unit may go."""
        now = self.clock()
        if self.next_at is None or self.next_at < now:
            self.next_at = now
        if self.next_at > now:
            self.sleep(self.next_at - now)
        self.next_at += self.interval


@dataclass
class Backfill:
    """The copying, for one range: Kafka first, then files; every unit through one throttle."""

    cfg: IngestConfig
    rng: Range
    run: str
    throttle: Throttle
    renew: Callable[[], None] = lambda: None
    dry_run: bool = False
    progress: Callable[[str], None] = lambda line: None
    counts: Counts = field(default_factory=Counts)
    timeout_s: float = 30.0

    @property
    def topic(self) -> str:
        return f"{RAW_TOPIC_PREFIX}{self.rng.feed}"

    # Kafka ----------------------------------------------------------------------------------------

    def offsets(self, consumer: Any) -> dict[int, tuple[int, int]]:
        """Per partition of raw.<feed>: [first offset at or after start, first offset at or after end)."""
        from confluent_kafka import TopicPartition

        meta = consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(self.topic)
        if meta is None or meta.error is not None:
            return {}  # a feed that never used Kafka
        ranges = {}
        for partition in sorted(meta.partitions):
            low, high = watermark_offsets(consumer, TopicPartition(self.topic, partition), self.timeout_s)
            # One call per time: a request names each partition once.
            start, end = ((found[0].offset if found[0].offset >= 0 else high) for found in (
                consumer.offsets_for_times([TopicPartition(self.topic, partition, at)], timeout=self.timeout_s)
                for at in (self.rng.start_ms, self.rng.end_ms)))
            if low > 0 and start <= low:  # retention dropped messages: were any of them in the range?
                first = self._timestamp_at(consumer, partition, low) if low < high else None
                if first is None:
                    raise BackfillError(f"{self.topic} partition {partition} holds no message any more (retention "
                                        f"dropped offsets below {low}): it cannot show the range was not in them")
                if first > self.rng.start_ms:
                    raise BackfillError(
                        f"{self.topic} partition {partition} no longer holds {iso(self.rng.start_ms)}: its retention "
                        f"starts at {iso(first)}. Backfill from {iso(first)} at the earliest")
            if end > start:
                ranges[partition] = (start, end)
        return ranges

    def _timestamp_at(self, consumer: Any, partition: int, offset: int) -> int | None:
        from confluent_kafka import TopicPartition

        consumer.assign([TopicPartition(self.topic, partition, offset)])
        try:
            message = consumer.poll(self.timeout_s)
            return None if message is None or message.error() else int(message.timestamp()[1])
        finally:
            consumer.unassign()

    def messages(self, consumer: Any, partition: int, start: int, end: int) -> Iterator[Any]:
        """The committed messages of one partition in [start, end), in order.

        Offsets are not all messages: transaction markers and aborted messages take offsets a read_committed
        consumer never sees, so the read ends at `end` or at the partition's end, whichever comes first.
        """
        from confluent_kafka import KafkaError, TopicPartition

        consumer.assign([TopicPartition(self.topic, partition, start)])
        try:
            deadline = time.monotonic() + self.timeout_s
            while True:
                message = consumer.poll(1.0)
                if message is None:
                    if consumer.position([TopicPartition(self.topic, partition)])[0].offset >= end:
                        return
                    if time.monotonic() > deadline:
                        raise BackfillError(f"reading {self.topic}/{partition}: nothing for {self.timeout_s:.0f} s "
                                            f"before offset {end} (an open transaction?)")
                    continue
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        return
                    raise BackfillError(f"reading {self.topic}/{partition}: {message.error()}")
                deadline = time.monotonic() + self.timeout_s
                if message.offset() >= end:
                    return
                yield message
        finally:
            consumer.unassign()

    def copy_kafka(self) -> None:
        """Produce each message of the range again, in transactions of up to BATCH messages."""
        from confluent_kafka import Consumer, Producer

        consumer = Consumer(client_config(self.cfg.kafka.bootstrap_servers, self.cfg.kafka.auth, **{
            "group.id": f"medistream-backfill-{self.rng.feed}", "isolation.level": "read_committed",
            "enable.auto.commit": False, "auto.offset.reset": "error", "enable.partition.eof": True}))
        producer: Any = None
        try:
            ranges = self.offsets(consumer)
            self.counts.partitions = {str(p): [start, end] for p, (start, end) in ranges.items()}
            self.progress(f"{self.topic}: {sum(e - s for s, e in ranges.values())} offsets in range over "
                          f"{len(ranges)} partition(s)")
            if self.dry_run:
                self.counts.messages = sum(e - s for s, e in ranges.values())
                return
            # One transactional id per feed: a zombie of an earlier run of this feed is fenced.
            producer = Producer(client_config(self.cfg.kafka.bootstrap_servers, self.cfg.kafka.auth, **{
                "acks": "all", "enable.idempotence": True,
                "transactional.id": f"medistream-backfill.{self.rng.feed}"}))
            producer.init_transactions(self.timeout_s)
            for partition, (start, end) in ranges.items():
                pending = 0
                for message in self.messages(consumer, partition, start, end):
                    headers = list(message.headers() or [])
                    if any(name == ORIGIN_HEADER for name, _value in headers):
                        self.counts.skipped_copies += 1  # an earlier backfill's copy: its original is read
                        continue
                    self.throttle.wait()
                    if pending == 0:
                        producer.begin_transaction()
                    origin = origin_header(self.topic, partition, message.offset())
                    producer.produce(self.topic, partition=partition, key=message.key(), value=message.value(),
                                     headers=[*headers, (ORIGIN_HEADER, origin.encode())],
                                     timestamp=int(message.timestamp()[1]))
                    pending += 1
                    self.counts.messages += 1
                    if pending == BATCH:
                        self._commit(producer)
                        pending = 0
                if pending:
                    self._commit(producer)
        finally:
            consumer.close()
            if producer is not None:
                producer.flush(self.timeout_s)

    def _commit(self, producer: Any) -> None:
        producer.commit_transaction(self.timeout_s)
        self.renew()
        self.progress(f"{self.topic}: {self.counts.messages} message(s) copied")

    # Files ----------------------------------------------------------------------------------------

    def landed(self, s3: Any) -> Iterator[tuple[str, str, int]]:
        """(bucket, key, modified ms) of each file of the feed landed in the range; copies and hidden files left out."""
        bucket, root = split_s3_url(self.cfg.landing.path.rstrip("/") + "/")
        prefix = f"{root}{self.rng.feed}/"
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix):]
                modified = int(item["LastModified"].timestamp() * 1000)
                if relative.startswith(f"{BACKFILL_FOLDER}/") or any(
                        part.startswith(("_", ".")) for part in relative.split("/")):
                    continue  # a backfill's copy, or a name Flink's file source never reads
                if self.rng.start_ms <= modified < self.rng.end_ms:
                    yield bucket, item["Key"], modified

    def copy_files(self, s3: Any) -> None:
        """Copy each file of the range under <landing>/<feed>/backfill/<run>/, keeping its time and key."""
        _bucket, root = split_s3_url(self.cfg.landing.path.rstrip("/") + "/")
        files = list(self.landed(s3))
        self.progress(f"landing {self.rng.feed}/: {len(files)} file(s) in range")
        for bucket, key, modified in files:
            if self.dry_run:
                self.counts.files += 1
                continue
            self.throttle.wait()
            target = backfill_key(root, self.rng.feed, self.run, modified, key[len(root):])
            s3.copy_object(CopySource={"Bucket": bucket, "Key": key}, Bucket=bucket, Key=target)
            self.counts.files += 1
            self.renew()


def backfill_datasets(cfg: IngestConfig, feed: str) -> tuple[list[Dataset], list[Dataset]]:
    """What a backfill of `feed` reads (its raw topic, its landing prefix) and writes (copies into both)."""
    topic = Dataset(kafka_namespace(cfg.kafka.bootstrap_servers), f"{RAW_TOPIC_PREFIX}{feed}")
    feed_prefix = f"{cfg.landing.path.rstrip('/')}/{feed}/"
    return [topic, url_dataset(feed_prefix)], [topic, url_dataset(f"{feed_prefix}{BACKFILL_FOLDER}/")]


def run_backfill(cfg: IngestConfig, groups: Mapping[str, Mapping[str, str]], operator: Operator, rng: Range,
                 rate: float, dry_run: bool, audit: Any = None, now_ms: int | None = None,
                 progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Check, audit, lock, copy, audit the counts; the JSON summary."""
    from connectors.kms import aws_client
    from connectors.s3 import s3_client

    contracts = load_contracts(Path(cfg.feeds.contracts_dir) if cfg.feeds.contracts_dir else FEEDS_DIR)
    audit = audit or open_audit_log(load_audit_settings(groups))  # the chain of the properties given
    what = f"backfill {rng.describe()} at {rate:g} units/s{' (dry run)' if dry_run else ''}"
    authorize(operator, "backfill", "ingest", what, audit)
    check_range(rng, now_ms if now_ms is not None else int(time.time() * 1000), duration_ms(cfg.feeds.dedup_ttl),
                set(contracts))
    run = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
    lease = None
    if not dry_run:
        lease = take_lease(aws_client(cfg.phi, "dynamodb"), groups, "backfill", rng.feed,
                           f"{operator.actor}/{run}/{os.getpid()}")
    job = Backfill(cfg, rng, run, Throttle(rate), renew=lease.take if lease else (lambda: None), dry_run=dry_run,
                   progress=progress)
    run_id, datasets = str(uuid.uuid4()), backfill_datasets(cfg, rng.feed)
    facets: dict[str, Any] = {"backfill_run": run, "range": rng.describe(), "rate": rate}
    if not dry_run:
        lineage.emit("START", f"backfill.{rng.feed}", groups, run_id, datasets=datasets, processing="BATCH", **facets)
    started = time.monotonic()
    try:
        job.copy_kafka()
        job.copy_files(s3_client(cfg.s3))
    except Exception as err:
        if not dry_run:
            lineage.emit("FAIL", f"backfill.{rng.feed}", groups, run_id, error=type(err).__name__,
                         datasets=datasets, processing="BATCH", **facets)
        raise
    finally:
        if lease is not None:
            lease.release()
    seconds = time.monotonic() - started
    if not dry_run:
        lineage.emit("COMPLETE", f"backfill.{rng.feed}", groups, run_id, datasets=datasets, processing="BATCH",
                     messages=job.counts.messages, files=job.counts.files, seconds=round(seconds, 1), **facets)
    summary = {"feed": rng.feed, "from": iso(rng.start_ms), "to": iso(rng.end_ms), "run": run, "dry_run": dry_run,
               "messages": job.counts.messages, "files": job.counts.files,
               "skipped_copies": job.counts.skipped_copies, "partitions": job.counts.partitions,
               "seconds": round(seconds, 1),
               "units_per_s": round((job.counts.messages + job.counts.files) / seconds, 1) if seconds else None}
    if not dry_run:
        authorize(operator, "backfill", "ingest", f"{what} done: run {run}, {job.counts.messages} message(s), "
                  f"{job.counts.files} file(s) copied in {seconds:.0f} s", audit)
    return summary


def parser() -> argparse.ArgumentParser:
    """The `medistream backfill` arguments."""
    root = argparse.ArgumentParser(prog="medistream backfill", description=__doc__.split("\n", 1)[0])
    root.add_argument("--actor", required=True, help="who runs it (audited)")
    root.add_argument("--role", required=True, help="a role of schemas/access/operations.yaml")
    root.add_argument("--reason", required=True, help="why (audited; no PHI)")
    root.add_argument("--feed", required=True)
    root.add_argument("--from", dest="start", required=True, type=parse_time, help="ISO 8601 time with zone")
    root.add_argument("--to", dest="end", required=True, type=parse_time, help="ISO 8601 time with zone (excluded)")
    root.add_argument("--rate", type=float, default=200.0, help="units (messages or files) per second (default 200)")
    root.add_argument("--dry-run", action="store_true", help="count what would be copied; write nothing")
    root.add_argument("--properties", help="application_properties.json (default: conf/ or MEDISTREAM_PROPERTIES)")
    return root


def main(argv: list[str] | None = None) -> int:
    """Exit 0 with the JSON summary on stdout; 2 with one line on stderr when refused or failed."""
    args = parser().parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError
    from confluent_kafka import KafkaException

    groups = read_property_groups(Path(args.properties) if args.properties else default_properties_path())
    cfg = load_ingest_config(groups)
    rng = Range(args.feed, args.start, args.end)
    try:
        summary = run_backfill(cfg, groups, Operator(args.actor, args.role, args.reason), rng, args.rate,
                               args.dry_run, progress=lambda line: print(f"backfill: {line}", file=sys.stderr))
    except JobControlError as err:
        print(f"medistream backfill: {err}", file=sys.stderr)
        return 2
    except (KafkaException, BotoCoreError, ClientError) as err:
        print(f"medistream backfill: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
