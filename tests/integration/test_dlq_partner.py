"""`medistream dlq replay` of partner dead letters: the local stack (Kafka, moto's DynamoDB), the partner stand-in.

The delivery path is the real one without the Flink runtime around it: every committed message of the
partner's curated topic (read_committed, from the beginning, as a restored job or a backfill would
re-read it) goes through the job's own senders (jobs.partner_delivery.make_senders -> PartnerSender on
the real ledger), and the dead letters are written to the partner dead-letter topic in one Kafka
transaction, as the job's exactly-once sink does. Partner A refuses some business keys (422); the
partner is "fixed" (stand-in B, which refuses nothing and has never seen a key, so any re-send of a
delivered key would show there as a new delivery); the replay goes through the real CLI.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.audit import event_of, load_audit_settings, open_audit_log
from connectors.kafka import create_missing_topics, watermark_offsets
from connectors.kms import aws_client
from connectors.partners.ledger import ACKED, DEAD, DeliveryLedger, ensure_ledger_table
from connectors.partners.sender import ALREADY_DEAD, ALREADY_DELIVERED, DEAD_LETTER, DELIVERED, Outcome
from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups
from infra.local.partner.curated import curated_messages, produce
from infra.local.partner.harness import (
    PARTNER,
    delivery_properties,
    provision_credentials,
    standin_config,
    write_contract,
)
from infra.local.partner.rules import PartnerConfig, rejected
from infra.local.partner.server import PartnerHandle, start_in_thread
from jobs.partner_delivery import DeliveryConfig, load_delivery_config, make_senders
from tests.integration.conftest import read_topic
from tools.cli import main
from tools.dlq_units import REPLAY_HEADER

pytestmark = pytest.mark.integration

FAST_RETRY = {"max_attempts": 3, "base_delay_s": 0.05, "max_delay_s": 0.2, "max_retry_after_s": 5, "auth_retries": 1}
OPERATOR = ["--actor", "test-operator", "--why", "partner fixed its member lookup"]


class World:
    """One run: curated topic, delivery ledger, partner dead-letter topic, replay ledger, audit chain, stand-in."""

    def __init__(self, run_id: str, home: Path, messages: list[dict[str, Any]], standin: PartnerConfig,
                 **contract: Any) -> None:
        self.run_id, self.home, self.messages = run_id, home, messages
        self.contracts = write_contract(home / "partners", **({"retry": FAST_RETRY} | contract))
        self.executor = ThreadPoolExecutor(8)
        self.partner: PartnerHandle | None = None
        self.use(standin)
        create_missing_topics(self.cfg.bootstrap_servers, [self.topic, self.cfg.dlq_topic])
        ensure_ledger_table(aws_client(self.cfg.phi, "dynamodb"), self.cfg.ledger_table)
        self.ledger = DeliveryLedger(aws_client(self.cfg.phi, "dynamodb"), self.cfg.ledger_table)
        produce(self.cfg.bootstrap_servers, self.topic, messages, f"test-curated-{run_id}")
        # A topic created a moment ago may answer its offsets as empty for a while: wait until all are readable.
        deadline = time.monotonic() + 30
        while len(read_topic(self.cfg.bootstrap_servers, self.topic)) < len(messages):
            assert time.monotonic() < deadline, "the curated messages never became readable"
            time.sleep(0.5)

    def use(self, standin: PartnerConfig) -> None:
        """Deliver to a (new) stand-in from now on: the run's properties point at it."""
        if self.partner is not None:
            self.partner.stop()
        self.standin, self.partner = standin, start_in_thread(standin)
        self.properties = delivery_properties(self.run_id, self.home, self.partner.url, self.contracts)
        groups = json.loads(self.properties.read_text())
        for group in groups:
            if group["PropertyGroupId"] == "kafka":
                group["PropertyMap"]["dlq.replays.topic"] = f"replays.t{self.run_id}"
            if group["PropertyGroupId"] == "audit":
                group["PropertyMap"]["chain"] = f"dlq-partner-test-{self.run_id}"
        self.properties.write_text(json.dumps(groups))
        self.cfg: DeliveryConfig = load_delivery_config(read_property_groups(self.properties))
        self.topic = self.cfg.topic(PARTNER)
        provision_credentials(aws_client(self.cfg.phi, "secretsmanager"), self.cfg.contracts[PARTNER], standin)

    def run_delivery(self) -> list[Outcome]:
        """What the delivery job does with its topic, re-read from the start: deliver each, dead-letter the dead."""
        from confluent_kafka import Producer

        records = [json.loads(m.value()) for m in read_topic(self.cfg.bootstrap_servers, self.topic)]
        sender = make_senders(self.cfg, 0, 1, f"test-job/{uuid.uuid4().hex[:8]}", self.executor)[PARTNER]

        async def deliver() -> list[Outcome]:
            async with aiohttp.ClientSession() as session:
                return list(await asyncio.gather(*(sender.deliver(session, r) for r in records)))

        outcomes = asyncio.run(deliver())
        letters = [x for x in (o.dead_letter(time.time_ns() // 1_000_000) for o in outcomes) if x]
        producer = Producer({"bootstrap.servers": self.cfg.bootstrap_servers,
                             "transactional.id": f"test-partner-dlq-{self.run_id}"})
        producer.init_transactions(30)
        producer.begin_transaction()
        for letter in letters:
            producer.produce(self.cfg.dlq_topic, value=letter.encode())
        producer.commit_transaction(30)
        return outcomes

    def stats(self) -> dict[str, Any]:
        assert self.partner is not None
        with urllib.request.urlopen(self.partner.url + "/v1/_stats", timeout=10) as answer:  # noqa: S310 - loopback
            stats: dict[str, Any] = json.loads(answer.read())
        return stats

    def audit_events(self) -> list[Any]:
        log = open_audit_log(load_audit_settings(read_property_groups(self.properties)))
        assert log.verify().ok
        return [event_of(e) for e in log.entries()]

    def state(self) -> dict[str, Any]:
        """Everything a refused or no-op replay must leave alone: ledger items, curated topic, replay ledger."""
        items = {m["business_key"]: self.ledger.get(PARTNER, key_of(m)) for m in self.messages}
        return {"items": items, "curated": len(read_topic(self.cfg.bootstrap_servers, self.topic)),
                "replays": len(read_topic(self.cfg.bootstrap_servers, f"replays.t{self.run_id}"))
                if self.replay_topic_exists() else 0}

    def replay_topic_exists(self) -> bool:
        from confluent_kafka.admin import AdminClient

        topics = AdminClient({"bootstrap.servers": self.cfg.bootstrap_servers}).list_topics(timeout=10).topics
        return f"replays.t{self.run_id}" in topics

    def close(self) -> None:
        if self.partner is not None:
            self.partner.stop()
        self.executor.shutdown()


def key_of(message: dict[str, Any]) -> str:
    from udfs.delivery import idempotency_key

    return idempotency_key(PARTNER, message["business_key"], message["record_id"])


@pytest.fixture
def world(stack: object, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    generated = curated_messages(24, 23, load_phi_config(read_property_groups(LOCAL_PROPERTIES)), PARTNER)
    # The topic holds JSON text: the large fields may come as their UTF-8 bytes from the row builder.
    messages = [{k: v.decode() if isinstance(v, bytes) else v for k, v in m.items()} for m in generated]
    assert len(messages) == 24
    made = World(run_id, tmp_path, messages, standin_config(400, 40, reject_fraction=0.3))
    monkeypatch.setenv("MEDISTREAM_PROPERTIES", str(made.properties))
    yield made
    made.close()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["dlq", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_replay_redelivers_exactly_the_dead_lettered_keys_once_under_the_same_keys(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    # 1. The partner refuses some business keys: they are dead-lettered, the rest delivered once.
    refused = {m["business_key"] for m in world.messages if rejected(world.standin, m["business_key"])}
    assert 0 < len(refused) < len(world.messages)
    outcomes = world.run_delivery()
    assert {o.business_key for o in outcomes if o.result == DEAD_LETTER} == refused, (
        len(outcomes), Counter((o.result, o.reason) for o in outcomes))
    assert world.stats()["deliveries_by_business_key"] == {
        m["business_key"]: 1 for m in world.messages if m["business_key"] not in refused}
    letters = {o.business_key: json.loads(o.dead_letter(1) or "") for o in outcomes if o.result == DEAD_LETTER}
    ids = sorted(letter["dead_letter_id"] for letter in letters.values())

    code, out, err = cli(capsys, "list", "--partner")
    assert (code, err) == (0, "") and out.splitlines()[-1] == f"{len(refused)} dead letter(s) on {world.cfg.dlq_topic}"
    assert sorted(line.split()[0] for line in out.splitlines()[:-1]) == ids
    assert not any(bk in out for bk in refused)  # codes and digests, never a business key
    code, out, _ = cli(capsys, "show", ids[0])
    assert code == 0 and json.loads(out)["dead_letter_id"] == ids[0]

    # 2. The partner is fixed. Until a replay, the job sends nothing for a dead key (it re-emits the dead letter).
    world.use(standin_config(400, 40))
    again = world.run_delivery()
    assert Counter(o.result for o in again) == {ALREADY_DELIVERED: len(world.messages) - len(refused),
                                                ALREADY_DEAD: len(refused)}
    assert world.stats()["requests"] == 0
    code, out, _ = cli(capsys, "list", "--partner", PARTNER)
    assert out.splitlines()[-1] == f"{len(refused)} dead letter(s) on {world.cfg.dlq_topic}"  # one per id
    untouched = world.state()

    # 3. Refusals change nothing: an unknown id; a role without `replay` (audited as a denial).
    unknown = "p" + "0" * 32
    code, out, err = cli(capsys, "replay", unknown, ids[0], "--role", "operator", *OPERATOR)
    assert (code, out) == (1, "")
    assert err == (f"medistream dlq: no dead letter with id {unknown} on {world.cfg.dlq_topic}: nothing was "
                   "replayed, nothing changed\n")
    code, out, err = cli(capsys, "replay", "--partner", PARTNER, "--role", "analyst", *OPERATOR)
    assert (code, out) == (1, "") and "role 'analyst' may not replay" in err and "nothing changed" in err
    assert world.state() == untouched
    events = world.audit_events()
    assert [(e.decision, e.role) for e in events] == [("deny", "analyst")]
    assert events[0].reason == (f"dlq replay of {len(refused)} partner dead letter(s) ({PARTNER}): "
                                "partner fixed its member lookup")
    assert events[0].actor == "test-operator" and events[0].action == "job_replay"

    # 4. A dry run writes nothing.
    code, out, _ = cli(capsys, "replay", "--partner", PARTNER, "--dry-run", "--role", "operator", *OPERATOR)
    assert code == 0 and out.splitlines()[-1] == (f"dry run, nothing written: {len(refused)} unit(s) from "
                                                  f"{len(refused)} dead letter(s): {len(refused)} would be replayed, "
                                                  "0 skipped, 0 not replayable")
    assert world.state() == untouched

    # 5. The replay: every dead letter reopened and its record produced again, once.
    code, out, err = cli(capsys, "replay", "--partner", PARTNER, "--role", "operator", *OPERATOR)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == (f"{len(refused)} unit(s) from {len(refused)} dead letter(s): {len(refused)} "
                                    "replayed, 0 skipped, 0 not replayable")
    assert all(line.startswith("replayed") and "same idempotency key" in line for line in out.splitlines()[:-1])
    curated = read_topic(world.cfg.bootstrap_servers, world.topic)
    replayed = [m for m in curated if REPLAY_HEADER in dict(m.headers() or [])]
    assert sorted(json.loads(m.value())["business_key"] for m in replayed) == sorted(refused)
    originals = {(m.key(), m.value()): m for m in curated if REPLAY_HEADER not in dict(m.headers() or [])}
    for m in replayed:  # same key, value, partition and headers as the original, plus the replay header
        original = originals[(m.key(), m.value())]
        assert m.partition() == original.partition()
        assert dict(m.headers()) == dict(original.headers() or []) | {
            REPLAY_HEADER: letters[json.loads(m.value())["business_key"]]["dead_letter_id"].encode()}
    for letter in letters.values():
        item = world.ledger.get(PARTNER, letter["idempotency_key"])
        assert item is not None and "state" not in item and item["replay_of"] == f"{letter['dead_letter_id']}#1"

    # A second replay before the job ran changes nothing: the replay ledger has every one.
    after_replay = world.state()
    code, out, _ = cli(capsys, "replay", *ids, "--role", "operator", *OPERATOR)
    assert code == 0 and f"0 replayed, {len(refused)} skipped, 0 not replayable" in out
    assert world.state() == after_replay

    # 6. The job delivers each dead-lettered key once, under its dead letter's idempotency key; nothing else.
    delivered = world.run_delivery()
    sent = [o for o in delivered if o.result == DELIVERED]
    assert sorted(o.business_key for o in sent) == sorted(refused)
    assert {o.business_key: o.idempotency_key for o in sent} == {bk: x["idempotency_key"] for bk, x in letters.items()}
    assert {o.result for o in delivered if o not in sent} == {ALREADY_DELIVERED}  # originals, copies, the rest
    stats = world.stats()
    assert stats["deliveries_by_business_key"] == {bk: 1 for bk in refused}
    assert stats["requests"] == len(refused)  # not one request for a key the partner already had
    for letter in letters.values():
        item = world.ledger.get(PARTNER, letter["idempotency_key"])
        assert item is not None and (item["state"], item["replays"]) == (ACKED, 1)

    # 7. Replaying again, even with --force, changes nothing: delivered keys are never reopened.
    code, out, _ = cli(capsys, "replay", "--partner", PARTNER, "--force", "--role", "operator", *OPERATOR)
    assert code == 0 and f"0 replayed, {len(refused)} skipped, 0 not replayable" in out
    assert out.count("already delivered (delivery ledger ACKED)") == len(refused)
    assert world.run_delivery() and world.stats()["requests"] == len(refused)

    events = world.audit_events()
    what = f"dlq replay of {len(refused)} partner dead letter(s) ({PARTNER})"
    assert [(e.decision, e.role, e.reason.split(": ")[0]) for e in events] == [
        ("deny", "analyst", what), ("grant", "operator", f"{what} [dry run]"),
        ("grant", "operator", f"{what} [dry run] done"), ("grant", "operator", what),
        ("grant", "operator", f"{what} done"), ("grant", "operator", what), ("grant", "operator", f"{what} done"),
        ("grant", "operator", f"{what} [--force]"), ("grant", "operator", f"{what} [--force] done")]
    assert events[4].reason == f"{what} done: {len(refused)} replayed, 0 skipped, 0 not replayable: " \
                               "partner fixed its member lookup"


def test_after_an_outage_every_record_whose_retries_ran_out_is_delivered_once_by_the_replay(
        stack: object, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    generated = curated_messages(8, 29, load_phi_config(read_property_groups(LOCAL_PROPERTIES)), PARTNER)
    messages = [{k: v.decode() if isinstance(v, bytes) else v for k, v in m.items()} for m in generated]
    # The partner answers 503 to everything; the breaker never opens, so each record spends its 3 attempts.
    world = World(run_id, tmp_path, messages, standin_config(400, 40, fail_rate=1.0),
                  circuit_breaker={"failure_threshold": 1000, "cooldown_s": 1})
    monkeypatch.setenv("MEDISTREAM_PROPERTIES", str(world.properties))
    try:
        outcomes = world.run_delivery()
        assert {(o.result, o.reason, o.attempts) for o in outcomes} == {(DEAD_LETTER, "retries_exhausted_http_503", 3)}
        assert world.stats()["by_status"] == {"503": 3 * len(messages)} and world.stats()["deliveries"] == 0
        world.use(standin_config(400, 40))
        code, out, _ = cli(capsys, "replay", "--partner", PARTNER, "--reason", "retries_exhausted_http_503",
                           "--role", "operator", *OPERATOR)
        assert code == 0 and out.splitlines()[-1].endswith(f"{len(messages)} replayed, 0 skipped, 0 not replayable")
        delivered = world.run_delivery()
        assert sorted(o.idempotency_key for o in delivered if o.result == DELIVERED) == sorted(
            o.idempotency_key for o in outcomes)
        assert {o.attempts for o in delivered if o.result == DELIVERED} == {4}  # the ledger keeps the count
        assert world.stats()["deliveries_by_business_key"] == {m["business_key"]: 1 for m in messages}
        assert world.stats()["requests"] == len(messages)
    finally:
        world.close()


def test_a_record_dropped_by_retention_is_not_replayable_and_its_ledger_item_stays_dead(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    outcomes = world.run_delivery()
    dead = [o for o in outcomes if o.result == DEAD_LETTER]
    assert dead
    # As retention would: every partition of the curated topic loses everything written so far.
    admin = AdminClient({"bootstrap.servers": world.cfg.bootstrap_servers})
    ends = []
    for p in admin.list_topics(world.topic, timeout=10).topics[world.topic].partitions:
        from confluent_kafka import Consumer

        consumer = Consumer({"bootstrap.servers": world.cfg.bootstrap_servers, "group.id": "test-watermarks"})
        ends.append(TopicPartition(world.topic, p, watermark_offsets(consumer, TopicPartition(world.topic, p), 10)[1]))
        consumer.close()
    for future in admin.delete_records(ends).values():
        future.result(timeout=30)
    code, out, _ = cli(capsys, "replay", "--partner", PARTNER, "--role", "operator", *OPERATOR)
    assert code == 1 and out.splitlines()[-1].endswith(f"0 replayed, 0 skipped, {len(dead)} not replayable")
    assert out.count(f"its record is not on {world.topic} any more (dropped by the topic's retention?") == len(dead)
    for o in dead:
        item = world.ledger.get(PARTNER, o.idempotency_key)
        assert item is not None and item["state"] == DEAD and "replay_of" not in item


def test_the_running_delivery_job_delivers_each_replayed_dead_letter_once(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same story with `jobs.partner_delivery` itself running on the mini-cluster throughout: the partner is
    fixed in place (same URL, a stand-in that never saw a key), and the job picks up the replayed records."""
    from urllib.parse import urlsplit

    from tests.contract.base import wait_until
    from tools.job_processes import JobProcesses

    refused = {m["business_key"] for m in world.messages if rejected(world.standin, m["business_key"])}
    keys = {m["business_key"]: key_of(m) for m in world.messages}
    expected_ids = sorted("p" + keys[bk].removeprefix("d1-") for bk in refused)

    def dead_letter_ids() -> list[str]:
        return sorted(json.loads(m.value())["dead_letter_id"] for m in read_topic(world.cfg.bootstrap_servers,
                                                                                    world.cfg.dlq_topic))

    jobs = JobProcesses(world.properties, tmp_path / "logs")
    jobs.start("delivery")
    try:
        wanted = {bk: 1 for bk in keys if bk not in refused}
        wait_until(lambda: world.stats()["deliveries_by_business_key"] == wanted and dead_letter_ids() == expected_ids,
                   240, "the job to deliver the accepted keys and dead-letter the refused ones", jobs.check_alive)

        # The partner fixes its lookup: same address, now refusing nothing (and knowing no key or token).
        assert world.partner is not None
        port = urlsplit(world.partner.url).port
        world.partner.stop()
        world.standin = PartnerConfig(port=port or 0, rate=400, burst=40, client_id=world.standin.client_id,
                                      client_secret=world.standin.client_secret)
        world.partner = start_in_thread(world.standin)
        time.sleep(3)
        assert world.stats()["deliveries"] == 0  # dead keys stay dead until replayed

        code, out, err = cli(capsys, "replay", "--partner", PARTNER, "--role", "operator", *OPERATOR)
        assert (code, err) == (0, "") and out.splitlines()[-1].endswith(
            f"{len(refused)} replayed, 0 skipped, 0 not replayable")
        fixed = {bk: 1 for bk in refused}
        wait_until(lambda: world.stats()["deliveries_by_business_key"] == fixed, 120,
                   "the job to deliver the replayed records", jobs.check_alive)
        time.sleep(5)  # anything more it would send, it would send now
        stats = world.stats()
        assert stats["deliveries_by_business_key"] == fixed and stats["replays"] == 0
        assert set(stats["by_status"]) <= {"201", "401"}  # 401: the job's token was the old partner's, refreshed
        assert dead_letter_ids() == expected_ids  # nothing died again
        for bk in refused:
            item = world.ledger.get(PARTNER, keys[bk])
            assert item is not None and (item["state"], item["replays"]) == (ACKED, 1)
            assert item["replay_of"] == f"p{keys[bk].removeprefix('d1-')}#1"
        jobs.check_alive()
    finally:
        jobs.stop_all()
