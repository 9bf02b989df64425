"""The partner delivery job under SIGKILLs and injected partner faults: every record reaches the partner stand-in
exactly once by business key, refused ones are dead-lettered exactly once with a reason, and the partner's
limit is never exceeded in any one-second window. Then a stateless backfill of the whole topic sends nothing."""

from __future__ import annotations

import json
import random
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connectors.kafka import create_missing_topics
from connectors.kms import aws_client
from connectors.partners.ledger import ACKED, DEAD
from connectors.properties import read_property_groups
from infra.local.partner.curated import curated_messages, produce
from infra.local.partner.harness import (
    PARTNER,
    delivery_properties,
    provision_credentials,
    standin_config,
    write_contract,
)
from infra.local.partner.rules import rejected
from infra.local.partner.server import start_in_thread
from jobs.partner_delivery import load_delivery_config
from tools.job_processes import JobProcesses
from udfs.delivery import idempotency_key

pytestmark = [pytest.mark.integration, pytest.mark.kill, pytest.mark.flink]

RECORDS, KILLS, RATE, BURST = 400, 5, 20, 4


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/v1/_stats", timeout=10) as answer:  # noqa: S310 - loopback stand-in
        stats: dict[str, Any] = json.loads(answer.read())
    return stats


def _dead_letters(bootstrap: str, topic: str) -> Counter[str]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:8]}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        ids: Counter[str] = Counter()
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 3:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            letter = json.loads(message.value() or b"{}")
            assert letter["reason_code"] == "http_422" and letter["partner_error"] == "member_not_found"
            ids[letter["dead_letter_id"]] += 1
            idle_since = time.monotonic()
        return ids
    finally:
        consumer.close()


def test_sigkills_and_partner_faults_deliver_every_record_once_within_the_limit(
        stack: object, tmp_path: Path) -> None:
    rng = random.Random(61)
    standin = standin_config(RATE, BURST, fail_rate=0.05, timeout_rate=0.03, hold_s=2.0, reject_fraction=0.05,
                             seed=61)
    partner = start_in_thread(standin)
    jobs: JobProcesses | None = None
    try:
        run_id = uuid.uuid4().hex[:8]
        contracts = write_contract(
            tmp_path / "partners", rate_limit={"requests_per_second": RATE, "burst": BURST}, concurrency=4,
            timeout_s=1, lease_s=4, retry={"max_attempts": 10, "base_delay_s": 0.2, "max_delay_s": 1,
                                           "max_retry_after_s": 5, "auth_retries": 1})
        properties = delivery_properties(run_id, tmp_path, partner.url, contracts)
        cfg = load_delivery_config(read_property_groups(properties))
        provision_credentials(aws_client(cfg.phi, "secretsmanager"), cfg.contracts[PARTNER], standin)
        messages = list(curated_messages(RECORDS, 61, cfg.phi, PARTNER))
        create_missing_topics(cfg.bootstrap_servers, [cfg.topic(PARTNER)])
        produce(cfg.bootstrap_servers, cfg.topic(PARTNER), messages, f"curated-t{run_id}")
        refused = {m["business_key"] for m in messages if rejected(standin, m["business_key"])}
        wanted = {m["business_key"] for m in messages} - refused
        assert refused and len(wanted) + len(refused) == RECORDS

        jobs = JobProcesses(properties, tmp_path / "logs")
        kills = 0
        while kills < KILLS:
            jobs.start("delivery")
            before = _stats(partner.url)["deliveries"]
            deadline = time.monotonic() + 180
            while _stats(partner.url)["deliveries"] < before + 10:  # it made progress: kill it mid-stream
                jobs.check_alive()
                assert time.monotonic() < deadline, f"no progress after kill {kills}; see {tmp_path}/logs"
                time.sleep(0.5)
            time.sleep(rng.uniform(0, 3))
            jobs.kill("delivery")
            kills += 1
        jobs.start("delivery")
        deadline = time.monotonic() + 300
        while set(_stats(partner.url)["deliveries_by_business_key"]) != wanted:
            jobs.check_alive()
            assert time.monotonic() < deadline, f"not every record arrived; see {tmp_path}/logs"
            time.sleep(1)
        dead = Counter[str]()
        deadline = time.monotonic() + 120
        expected_dead = {"p" + idempotency_key(PARTNER, m["business_key"], m["record_id"])[3:]
                         for m in messages if m["business_key"] in refused}
        while set(dead) != expected_dead and time.monotonic() < deadline:
            time.sleep(2)  # dead letters commit with the next checkpoint
            dead = _dead_letters(cfg.bootstrap_servers, cfg.dlq_topic)
        jobs.stop_all()
        stats = _stats(partner.url)

        # A backfill: the job again, without state, under a new consumer group, from offset 0. The ledger
        # answers SKIP_ACKED for every delivered key (nothing is sent) and re-emits each dead letter
        # with its id; the re-emitted ones show the backfill read the whole topic.
        backfill = delivery_properties(run_id, tmp_path / "backfill", partner.url, contracts,
                                       {"group.id": f"backfill-t{run_id}"})
        jobs = JobProcesses(backfill, tmp_path / "backfill" / "logs")
        jobs.start("delivery")
        deadline = time.monotonic() + 180
        while set(replayed := _dead_letters(cfg.bootstrap_servers, cfg.dlq_topic).values()) != {2}:
            jobs.check_alive()
            assert time.monotonic() < deadline, f"the backfill did not re-read the topic; see {tmp_path}/backfill"
            time.sleep(2)
        time.sleep(5)  # records after the last dead letter in a partition are skipped too
        after_backfill = _stats(partner.url)
        jobs.stop_all()
    finally:
        if jobs is not None:
            jobs.stop_all()
        partner.stop()

    print(json.dumps({k: stats[k] for k in ("requests", "by_status", "deliveries", "replays",
                                              "max_admitted_per_1s", "delivered_span_s")}))
    assert kills == KILLS
    assert stats["deliveries_by_business_key"] == dict.fromkeys(sorted(wanted), 1)  # exactly once, none lost
    assert dead == Counter(dict.fromkeys(expected_dead, 1))  # each refusal dead-lettered exactly once
    assert stats["by_status"].get("429", 0) == 0  # the partner never had to refuse us for the rate
    assert stats["max_admitted_per_1s"] <= RATE + BURST
    assert stats["by_status"]["503"] > 0 and stats["replays"] > 0  # the faults did happen
    assert after_backfill["requests"] == stats["requests"] and replayed  # the backfill sent nothing
    ledger = aws_client(cfg.phi, "dynamodb").scan(TableName=cfg.ledger_table)["Items"]
    states = Counter(item["state"]["S"] for item in ledger)
    assert states == Counter({ACKED: len(wanted), DEAD: len(refused)})
