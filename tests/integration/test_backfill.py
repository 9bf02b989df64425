"""`medistream backfill` against the local stack (Kafka, the S3 and DynamoDB APIs), without a job: what it copies
and how, and every refusal changing nothing. The job's side (copies read as their originals, nothing delivered
twice) runs on the cluster in test_job_control.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.audit import event_of, load_audit_settings, open_audit_log
from connectors.kms import aws_client
from connectors.properties import read_property_groups
from infra.local import synthetic
from infra.local.isolation import isolated_config, write_properties
from infra.local.publish import publish
from schemas.contracts import load_contracts
from tests.integration.conftest import read_topic
from tools import backfill
from tools.backfill import iso
from tools.operation_lease import LOCK_TABLE, FeedLease, ensure_lock_table
from tools.readback import s3_client
from udfs.source import ORIGIN_HEADER

pytestmark = [pytest.mark.integration]
SEED = 61
OPERATOR = ["--actor", "olu", "--role", "operator", "--reason", "INC-42 repair"]


@pytest.fixture
def feed_run(stack: object, run_id: str, tmp_path: Path) -> dict[str, Any]:
    """One Kafka feed and one file feed of a fresh run, a few records each, published; the run's properties."""
    cfg = isolated_config(run_id, tmp_path)
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    kafka_feed = next(f for f, c in sorted(contracts.items()) if "kafka" in c.sources)
    file_feed = next(f for f, c in sorted(contracts.items()) if "kafka" not in c.sources)
    properties = write_properties(run_id, tmp_path, audit_chain=f"backfill-test-{run_id}")
    start = time.time() - 1
    chosen = [contracts[kafka_feed], contracts[file_feed]]
    types = {c.record_type for c in chosen}
    mix = synthetic.Mix(*(1.0 if t in types else 0.0 for t in ("claim", "payment", "eligibility")))
    generated = list(synthetic.generate(60, seed=SEED, feeds=synthetic.feeds_from_contracts(chosen), mix=mix,
                                        duplicate_rate=0.0, invalid_rate=0.0))
    publish(generated, cfg.kafka.bootstrap_servers, s3_client(cfg.s3), "medistream-landing",
            landing_prefix=f"t{run_id}/", records_per_file=10, contracts=contracts)
    time.sleep(1.5)  # the range ends strictly after every publication
    return {"cfg": cfg, "properties": properties, "kafka_feed": kafka_feed, "file_feed": file_feed,
            "start": start, "end": time.time(), "generated": generated}


def _run(feed_run: dict[str, Any], capsys: pytest.CaptureFixture[str], feed: str, *extra: str,
         operator: list[str] = OPERATOR) -> tuple[int, Any]:
    code = backfill.main([*operator, "--properties", str(feed_run["properties"]), "--feed", feed,
                          "--from", iso(int(feed_run["start"] * 1000)), "--to", iso(int(feed_run["end"] * 1000)),
                          *extra])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else out.err.strip())


def _ids(messages: list[Any]) -> set[tuple[int, int]]:
    return {(m.partition(), m.offset()) for m in messages}


def _backfill_keys(cfg: Any, feed: str) -> list[str]:
    bucket, _, root = cfg.landing.path.removeprefix("s3://").partition("/")
    listed = s3_client(cfg.s3).list_objects_v2(Bucket=bucket, Prefix=f"{root}{feed}/backfill/")
    return [item["Key"] for item in listed.get("Contents", [])]


def test_a_backfill_copies_each_unit_once_naming_its_original(
        feed_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cfg, kafka_feed, file_feed = feed_run["cfg"], feed_run["kafka_feed"], feed_run["file_feed"]
    originals = read_topic(cfg.kafka.bootstrap_servers, f"raw.{kafka_feed}")
    assert originals

    code, dry = _run(feed_run, capsys, kafka_feed, "--dry-run")
    assert code == 0 and dry["messages"] == len(originals)
    assert _ids(read_topic(cfg.kafka.bootstrap_servers, f"raw.{kafka_feed}")) == _ids(originals)  # nothing written

    code, done = _run(feed_run, capsys, kafka_feed, "--rate", "1000")
    assert code == 0 and done["messages"] == len(originals) and done["files"] == 0
    after = read_topic(cfg.kafka.bootstrap_servers, f"raw.{kafka_feed}")
    copies = [m for m in after if any(name == ORIGIN_HEADER for name, _ in m.headers() or [])]
    assert len(copies) == len(originals)
    by_origin = {dict(m.headers())[ORIGIN_HEADER].decode(): m for m in copies}
    for message in originals:  # same partition, key, value and time; the header names the original
        copy = by_origin[f"raw.{kafka_feed}/{message.partition()}@{message.offset()}"]
        assert (copy.partition(), copy.key(), copy.value(), copy.timestamp()[1]) == (
            message.partition(), message.key(), message.value(), message.timestamp()[1])

    # Again: the earlier copies are in the range too, and are not copied (their originals are).
    code, again = _run(feed_run, capsys, kafka_feed)
    assert code == 0 and again["messages"] == len(originals) and again["skipped_copies"] == len(originals)

    code, files = _run(feed_run, capsys, file_feed)
    assert code == 0 and files["files"] > 0 and files["messages"] == 0
    keys = _backfill_keys(cfg, file_feed)
    assert len(keys) == files["files"] and all(f"/backfill/{files['run']}/" in k for k in keys)
    code, files_again = _run(feed_run, capsys, file_feed)  # copies are never copied again
    assert code == 0 and files_again["files"] == files["files"]

    entries = open_audit_log(load_audit_settings(read_property_groups(feed_run["properties"]))).entries()
    events = [event_of(e) for e in entries]
    assert [(e.action, e.decision) for e in events] == [("job_backfill", "grant")] * 9  # dry run: one event
    assert "done" in events[2].reason and f"{len(originals)} message(s)" in events[2].reason


def test_refusals_change_nothing(feed_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cfg, feed = feed_run["cfg"], feed_run["kafka_feed"]
    originals = read_topic(cfg.kafka.bootstrap_servers, f"raw.{feed}")

    code, refused = _run(feed_run, capsys, feed, operator=["--actor", "dana", "--role", "analyst", "--reason", "x"])
    assert code == 2 and "role 'analyst' may not backfill" in refused

    code, refused = _run(feed_run, capsys, "no_such_feed")
    assert code == 2 and "no feed 'no_such_feed'" in refused

    # Another backfill of the feed holds the lease.
    dynamodb = aws_client(cfg.phi, "dynamodb")
    ensure_lock_table(dynamodb, LOCK_TABLE)
    other = FeedLease(dynamodb, LOCK_TABLE, feed, "kim/earlier-run/1")
    other.take()
    try:
        code, refused = _run(feed_run, capsys, feed)
        assert code == 2 and "a backfill of" in refused and "kim/earlier-run/1" in refused
    finally:
        other.release()

    # Retention dropped the first message of a partition: the range is wider than Kafka holds.
    topic = f"raw.{feed}"
    partition = min(m.partition() for m in originals)
    first = min(m.offset() for m in originals if m.partition() == partition)
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    for future in admin.delete_records([TopicPartition(topic, partition, first + 1)]).values():
        future.result(timeout=30)
    code, refused = _run(feed_run, capsys, feed)
    assert code == 2 and "no longer holds" in refused and "Backfill from" in refused

    after = read_topic(cfg.kafka.bootstrap_servers, topic)
    assert _ids(after) == _ids(originals) - {(partition, first)}  # nothing written
    events = [event_of(e) for e in open_audit_log(load_audit_settings(read_property_groups(
        feed_run["properties"]))).entries()]
    assert [(e.actor, e.decision) for e in events] == [("dana", "deny"), ("olu", "grant"), ("olu", "grant"),
                                                       ("olu", "grant")]
