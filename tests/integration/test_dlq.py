"""`medistream dlq list|show|replay` against the local stack: real broker, real moto S3, the real CLI.

Each test builds its own world (run id in every topic and prefix): raw units on a fresh raw.<feed>
topic and a landed file, and the dead letters the job would have written for them, transactionally,
to a test-only DLQ topic named in a test-only properties file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.kafka import create_missing_topics
from connectors.properties import LOCAL_PROPERTIES, load_ingest_config, read_property_groups
from tests.integration.conftest import read_topic
from tools.cli import main
from tools.dlq_units import REPLAY_HEADER
from tools.readback import s3_client
from udfs.dead_letters import DeadLetter

pytestmark = pytest.mark.integration

BOOTSTRAP = "127.0.0.1:19092"
LANDING_BUCKET = "medistream-landing"
SECRET = b"PATIENT-SECRET-NAME"  # stands in for PHI inside raw units: must never be printed


def landing_s3() -> Any:
    """An S3 client for the local stack's moto server."""
    return s3_client(load_ingest_config(read_property_groups(LOCAL_PROPERTIES)).s3)


def write_properties(path: Path, *, dlq_topic: str, ledger_topic: str, landing: str,
                     bootstrap: str = BOOTSTRAP) -> Path:
    """The local properties file with this test's topics and landing prefix."""
    groups = json.loads(LOCAL_PROPERTIES.read_text())
    for group in groups:
        if group["PropertyGroupId"] == "kafka":
            group["PropertyMap"] |= {"bootstrap.servers": bootstrap, "dlq.topic": dlq_topic,
                                     "dlq.replays.topic": ledger_topic}
        if group["PropertyGroupId"] == "landing":
            group["PropertyMap"]["path"] = landing
        if group["PropertyGroupId"] == "audit":  # replays are audited: on this test's own chain
            group["PropertyMap"]["chain"] = f"dlq-test-{dlq_topic}"
    path.write_text(json.dumps(groups))
    return path


def produce(topic: str, partition: int, value: bytes, key: bytes | None = None,
            headers: list[tuple[str, bytes]] | None = None) -> int:
    """Produce one message and return its offset."""
    from confluent_kafka import Producer

    delivered: list[Any] = []
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "acks": "all"})
    producer.produce(topic, value=value, key=key, partition=partition, headers=headers,
                     on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.flush(30)
    assert delivered and delivered[0][0] is None
    return int(delivered[0][1].offset())


def write_dead_letters(topic: str, letters: list[DeadLetter], *, abort: bool = False) -> None:
    """As the job does: keyed by dead-letter id, JSON bodies, in one Kafka transaction."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": f"test-dlq-{topic}-{abort}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for letter in letters:
        producer.produce(topic, key=letter.dead_letter_id.encode(), value=letter.to_json().encode())
    if abort:
        producer.abort_transaction(30)
    else:
        producer.commit_transaction(30)


def replayed_messages(topic: str) -> list[Any]:
    """Messages on a raw topic that carry the replay header."""
    return [m for m in read_topic(BOOTSTRAP, topic) if any(k == REPLAY_HEADER for k, _ in (m.headers() or []))]


@dataclass
class World:
    """One test's raw units, dead letters and config."""

    run_id: str
    properties: Path
    raw_feed: str
    file_feed: str
    raw_topic: str
    dlq_topic: str
    ledger_topic: str
    landing: str
    file_key: str
    file_body: bytes
    units: dict[str, bytes]   # name -> raw message value
    letters: dict[str, DeadLetter]
    aborted_id: str

    def replay_prefix(self) -> str:
        return f"t{self.run_id}/{self.file_feed}/replay/"


def letter(name: str, feed: str, source: dict[str, Any], payload: bytes, at: int, *,
           stage: str = "schema", reason: str = "schema_violation") -> DeadLetter:
    digest = hashlib.sha256(payload).hexdigest()
    return DeadLetter(dead_letter_id=hashlib.sha256(f"{name}|{source}".encode()).hexdigest()[:32], feed=feed,
                      stage=stage, reason_code=reason, detail="$.claim.total_charge type", record_id=None,
                      payload_sha256=digest, payload_bytes=len(payload), source=source, failed_at_ms=at)


@pytest.fixture
def world(stack: object, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    raw_feed, file_feed = f"t{run_id}_claims", f"t{run_id}_files"
    raw_topic, dlq_topic, ledger_topic = f"raw.{raw_feed}", f"dlq.t{run_id}", f"replays.t{run_id}"
    landing = f"s3://{LANDING_BUCKET}/t{run_id}/"
    create_missing_topics(BOOTSTRAP, [raw_topic, dlq_topic])  # 2 partitions each

    units = {
        "retired": b'{"record_type": "claim"}',
        "good": b'{"record_type": "claim", "ok": true}',
        "bad": b'{"record_type": "claim", "name": "' + SECRET + b'"',  # malformed JSON, whole unit refused
        "changed": b'{"record_type": "claim", "v": 2}',
        "multi": b'[{"id": 1}, {"id": 2}, {"id": 3, "name": "' + SECRET + b'"}]',
    }
    offsets = {name: produce(raw_topic, 0, value, key=f"k-{name}".encode(), headers=[("trace", name.encode())])
               for name, value in units.items() if name != "multi"}
    offsets["multi"] = produce(raw_topic, 1, units["multi"], key=b"k-multi")
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    # As retention would: the oldest message of partition 0 is gone. (Keep the client alive until
    # its futures resolve: a collected AdminClient never completes them.)
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.delete_records([TopicPartition(raw_topic, 0, offsets["retired"] + 1)]).values():
        future.result(timeout=30)

    file_key = f"t{run_id}/{file_feed}/2026/01/02/batch.csv"
    file_body = b"id,name\n1,a\n2," + SECRET + b"\n3,c\n4,d\n5,e\n"
    landing_s3().put_object(Bucket=LANDING_BUCKET, Key=file_key, Body=file_body)

    def kafka_source(name: str, partition: int = 0, **extra: Any) -> dict[str, Any]:
        return {"kind": "kafka", "feed": raw_feed, "topic": raw_topic, "partition": partition,
                "offset": offsets[name], **extra}

    file_source = {"kind": "file", "feed": file_feed, "path": f"s3://{LANDING_BUCKET}/{file_key}"}
    t0 = 1_767_300_000_000  # 2026-01-01T20:40:00Z
    letters = {
        "retired": letter("retired", raw_feed, kafka_source("retired"), units["retired"], t0),
        "bad": letter("bad", raw_feed, kafka_source("bad"), units["bad"], t0 + 1, stage="decode",
                      reason="malformed_json"),
        "changed": letter("changed", raw_feed, kafka_source("changed"), b"what the job saw then", t0 + 2),
        "multi1": letter("multi1", raw_feed, kafka_source("multi", 1, position="record 1"), b'{"id": 1}', t0 + 3),
        "multi3": letter("multi3", raw_feed, kafka_source("multi", 1, position="record 3"), b'{"id": 3}', t0 + 4),
        "beyond": letter("beyond", raw_feed, {**kafka_source("good"), "offset": 999}, b"x", t0 + 5),
        "row2": letter("row2", file_feed, {**file_source, "position": "row 2"}, b"2,x", t0 + 6),
        "row5": letter("row5", file_feed, {**file_source, "position": "row 5"}, b"5,e", t0 + 7),
        "nofile": letter("nofile", file_feed, {**file_source, "path": file_source["path"] + ".gone"}, b"y", t0 + 8),
    }
    # Written in two transactions out of time order: `list` must still show newest last.
    write_dead_letters(dlq_topic, [letters[k] for k in ("row2", "row5", "nofile")])
    write_dead_letters(dlq_topic, [v for k, v in letters.items() if k not in ("row2", "row5", "nofile")])
    aborted = letter("aborted", raw_feed, kafka_source("good"), units["good"], t0 + 9)
    write_dead_letters(dlq_topic, [aborted], abort=True)

    properties = write_properties(tmp_path / "properties.json", dlq_topic=dlq_topic, ledger_topic=ledger_topic,
                                  landing=landing)
    monkeypatch.setenv("MEDISTREAM_PROPERTIES", str(properties))
    return World(run_id, properties, raw_feed, file_feed, raw_topic, dlq_topic, ledger_topic, landing, file_key,
                 file_body, units, letters, aborted.dead_letter_id)


OPERATOR = ("--actor", "test-operator", "--role", "operator", "--why", "contract fixed")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["dlq", *argv, *(OPERATOR if argv[0] == "replay" else ())])
    out, err = capsys.readouterr()
    assert SECRET.decode() not in out + err
    assert code == 1 or err == ""  # no client log noise around a normal run
    return code, out, err


def replay_objects(w: World) -> list[str]:
    listed = landing_s3().list_objects_v2(Bucket=LANDING_BUCKET, Prefix=w.replay_prefix())
    return sorted(o["Key"] for o in listed.get("Contents", []))


def statuses(out: str) -> list[tuple[str, str]]:
    """(status, unit pointer) per printed unit line."""
    rows = []
    for line in out.splitlines()[:-1]:
        status = next(s for s in ("not replayable", "would replay", "replayed", "skipped") if line.startswith(s))
        rows.append((status, line.removeprefix(status).split()[0]))
    return rows


def test_list_filters_and_show(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    ids = {name: x.dead_letter_id for name, x in world.letters.items()}
    code, out, _ = cli(capsys, "list")
    lines = out.splitlines()
    assert code == 0 and lines[-1] == f"9 dead letter(s) on {world.dlq_topic}"
    assert [line.split()[0] for line in lines[:-1]] == list(ids.values())  # newest last
    assert world.aborted_id not in out  # read_committed: an aborted dead letter never shows
    assert f"kafka:{world.raw_topic}/1@0 (record 3)" in out and "2026-" in out

    code, out, _ = cli(capsys, "list", "--feed", world.file_feed)
    assert [line.split()[0] for line in out.splitlines()[:-1]] == [ids["row2"], ids["row5"], ids["nofile"]]
    code, out, _ = cli(capsys, "list", "--reason", "decode.malformed_json")
    assert [line.split()[0] for line in out.splitlines()[:-1]] == [ids["bad"]]
    code, out, _ = cli(capsys, "list", "--feed", world.raw_feed, "--reason", "schema_violation", "--limit", "2",
                       "--json")
    assert [orjson.loads(line) for line in out.splitlines()] == [asdict(world.letters[k]) for k in ("multi3", "beyond")]

    code, out, _ = cli(capsys, "show", ids["multi1"])
    assert code == 0 and orjson.loads(out) == asdict(world.letters["multi1"])
    code, out, err = cli(capsys, "show", "f" * 32)
    assert (code, out) == (1, "")
    assert err == f"medistream dlq: no dead letter with id {'f' * 32} on {world.dlq_topic}\n"


def test_replay_each_unit_once_then_ledger_skips_then_force(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    ids = {name: x.dead_letter_id for name, x in world.letters.items()}
    raw_before = len(read_topic(BOOTSTRAP, world.raw_topic))

    # Dry run: the same verdicts, nothing written.
    code, out, _ = cli(capsys, "replay", "--feed", world.raw_feed, "--dry-run")
    assert code == 1 and out.splitlines()[-1].startswith("dry run, nothing written: 5 unit(s) from 6 dead letter(s): "
                                                         "2 would be replayed, 0 skipped")
    assert [s for s, _ in statuses(out)] == ["not replayable", "would replay", "not replayable", "would replay",
                                             "not replayable"]
    code, out, _ = cli(capsys, "replay", ids["row2"], ids["row5"], "--dry-run")
    assert code == 0 and "1 unit(s) from 2 dead letter(s): 1 would be replayed" in out
    assert len(read_topic(BOOTSTRAP, world.raw_topic)) == raw_before and replay_objects(world) == []
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    assert world.ledger_topic not in admin.list_topics(timeout=10).topics

    # Replay: each replayable unit exactly once, the rest reported with why.
    code, out, _ = cli(capsys, "replay", "--feed", world.raw_feed)
    assert code == 1 and out.splitlines()[-1] == ("5 unit(s) from 6 dead letter(s): 2 replayed, 0 skipped "
                                                  "(already replayed), 3 not replayable")
    assert "dropped by the retention of" in out and "SHA-256 differs" in out and "offset 999 is past the end" in out
    replayed = replayed_messages(world.raw_topic)
    assert sorted(m.value() for m in replayed) == sorted([world.units["bad"], world.units["multi"]])
    by_value = {m.value(): m for m in replayed}
    bad, multi = by_value[world.units["bad"]], by_value[world.units["multi"]]
    assert (bad.key(), bad.partition(), multi.key(), multi.partition()) == (b"k-bad", 0, b"k-multi", 1)
    assert dict(bad.headers()) == {"trace": b"bad", REPLAY_HEADER: ids["bad"].encode()}
    assert dict(multi.headers())[REPLAY_HEADER] == ",".join(sorted([ids["multi1"], ids["multi3"]])).encode()

    code, out, _ = cli(capsys, "replay", ids["row2"], ids["row5"], ids["nofile"])
    assert code == 1 and "2 unit(s) from 3 dead letter(s): 1 replayed" in out
    assert "the file is no longer in the landing bucket" in out
    (target,) = replay_objects(world)
    assert target.startswith(f"t{world.run_id}/{world.file_feed}/replay/") and target.endswith("/batch.csv")
    assert landing_s3().get_object(Bucket=LANDING_BUCKET, Key=target)["Body"].read() == world.file_body

    # Again: the ledger skips every replayed unit; nothing new is written.
    code, out, _ = cli(capsys, "replay", "--feed", world.raw_feed)
    assert "0 replayed, 2 skipped (already replayed), 3 not replayable" in out
    code, out, _ = cli(capsys, "replay", ids["row5"])
    assert code == 0 and "0 replayed, 1 skipped" in out and "--force replays again" in out
    assert len(replayed_messages(world.raw_topic)) == 2 and replay_objects(world) == [target]

    # --force: a second attempt of each unit.
    code, out, _ = cli(capsys, "replay", "--feed", world.raw_feed, "--force")
    assert "2 replayed, 0 skipped" in out
    code, out, _ = cli(capsys, "replay", ids["row2"], "--force")
    assert code == 0 and "1 replayed" in out
    assert len(replayed_messages(world.raw_topic)) == 4
    objects = replay_objects(world)
    assert len(objects) == 2 and any(key.split("/")[-2].endswith("-2") for key in objects)

    # Every replay was audited before it wrote, and again with its result.
    from connectors.audit import event_of, load_audit_settings, open_audit_log

    log = open_audit_log(load_audit_settings(read_property_groups(world.properties)))
    events = [event_of(e) for e in log.entries()]
    assert log.verify().ok and {(e.action, e.decision, e.role) for e in events} == {("job_replay", "grant", "operator")}
    assert events[0].reason == ("dlq replay of 5 unit(s) from 6 ingest dead letter(s) [dry run]: contract fixed")
    assert "done: 2 replayed, 0 skipped, 3 not replayable" in events[5].reason

    # The ledger: compacted, newest entry per unit says attempt 2.
    from confluent_kafka.admin import ConfigResource, ResourceType

    (future,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, world.ledger_topic)]).values()
    assert future.result(timeout=10)["cleanup.policy"].value == "compact"
    entries = {m.key().decode(): orjson.loads(m.value()) for m in read_topic(BOOTSTRAP, world.ledger_topic)}
    assert {k: v["attempt"] for k, v in entries.items()} == {
        f"kafka:{world.raw_topic}/0@2": 2, f"kafka:{world.raw_topic}/1@0": 2,
        f"file:s3://{LANDING_BUCKET}/{world.file_key}": 2,
    }


def test_file_replay_target_is_not_written_twice_when_the_ledger_lost_it(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    row2 = world.letters["row2"].dead_letter_id
    code, out, _ = cli(capsys, "replay", row2)
    assert code == 0 and "1 replayed" in out
    (target,) = replay_objects(world)
    # A fresh ledger (as if the entry had been lost after the copy): the existing target is found.
    write_properties(world.properties, dlq_topic=world.dlq_topic, ledger_topic=f"{world.ledger_topic}.b",
                     landing=world.landing)
    code, out, _ = cli(capsys, "replay", row2)
    assert code == 0 and "already exists (an earlier replay); not written twice" in out
    assert replay_objects(world) == [target]
    # ...and recorded, so the next run skips it by the ledger.
    code, out, _ = cli(capsys, "replay", row2)
    assert "already replayed at" in out


def test_broker_down_is_one_line_and_exit_1(tmp_path: Path) -> None:
    properties = write_properties(tmp_path / "p.json", dlq_topic="dlq.none", ledger_topic="replays.none",
                                  landing="s3://medistream-landing/none/", bootstrap="127.0.0.1:1")
    runs = [subprocess.Popen([sys.executable, "-m", "tools.cli", "dlq", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
                             env={**os.environ, "MEDISTREAM_PROPERTIES": str(properties)})
            for argv in (["list"], ["show", "abc"], ["replay", "--feed", "x", *OPERATOR])]  # at once: 10 s each
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert (run.returncode, out) == (1, ""), err
        assert err == "medistream dlq: Kafka broker unreachable at kafka.bootstrap.servers=127.0.0.1:1\n"
