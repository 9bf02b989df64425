"""The partner delivery job's run (what tests/chaos/test_partner_delivery_kill.py did): curated records, a few
business keys with three versions each, through SIGKILLs and injected partner faults (503s, held answers,
deterministic 422s) to the partner stand-in; then a stateless backfill of the whole topic, which must send nothing.
Per-key order is read from the ledger: each acknowledgement keeps the stand-in's delivery id, a sequence."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any

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
from schemas.contracts import load_contracts
from tests.contract.base import Harness, Run, wait_until
from tests.integration.test_phi_outputs import _leaves, phi_values
from tools.checks.leak_scan import Needles
from tools.job_processes import JobProcesses
from udfs.delivery import idempotency_key

RECORDS, VERSIONED, RATE, BURST, SEED = 300, 20, 20, 4, 61


def stats(url: str) -> dict[str, Any]:
    """The stand-in's counts."""
    with urllib.request.urlopen(url + "/v1/_stats", timeout=10) as answer:  # noqa: S310 - loopback stand-in
        return dict(json.loads(answer.read()))


def dead_letters(bootstrap: str, topic: str) -> tuple[Counter[str], list[str]]:
    """Committed partner dead letters: count per dead-letter id, and their texts."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:8]}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        ids: Counter[str] = Counter()
        texts: list[str] = []
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 3:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            texts.append((message.value() or b"").decode())
            ids[json.loads(texts[-1])["dead_letter_id"]] += 1
            idle_since = time.monotonic()
        return ids, texts
    finally:
        consumer.close()


class PartnerRun(Run):
    """`jobs.partner_delivery` against the in-process stand-in (its own loopback port), 3 SIGKILLs mid-stream."""

    kills, waves = 3, 4

    def __init__(self, home: Path, run_id: str) -> None:
        super().__init__(home, SEED)
        self.run_id = run_id
        self.standin = standin_config(RATE, BURST, fail_rate=0.05, timeout_rate=0.03, hold_s=2.0,
                                      reject_fraction=0.05, seed=SEED)
        self.partner: Any = start_in_thread(self.standin)
        contracts = write_contract(
            home / "partners", rate_limit={"requests_per_second": RATE, "burst": BURST}, concurrency=4,
            timeout_s=1, lease_s=4, retry={"max_attempts": 10, "base_delay_s": 0.2, "max_delay_s": 1,
                                           "max_retry_after_s": 5, "auth_retries": 1})
        self.contracts_dir = contracts
        self.properties = delivery_properties(run_id, home, self.partner.url, contracts)
        self.cfg = load_delivery_config(read_property_groups(self.properties))
        self.jobs = JobProcesses(self.properties, home / "logs")
        self.wave_messages = self._messages()
        self.messages = [m for wave in self.wave_messages for m in wave]
        self.refused = {m["business_key"] for m in self.messages if rejected(self.standin, m["business_key"])}
        self.backfill: dict[str, Any] = {}

    @cached_property
    def generated(self) -> dict[str, Any]:
        """The generated records (never real people) behind the curated messages, by record id, made as
        infra.local.partner.curated.curated_messages makes them."""
        from infra.local.synthetic import Mix, feeds_from_contracts, generate

        carried = {c.record_type for c in self.contracts.values()}
        mix = Mix(**{t: (1.0 if t in carried else 0.0) for t in ("claim", "payment", "eligibility")})
        return {g.record_id: g for g in generate(RECORDS * 4, SEED, mix=mix, duplicate_rate=0, invalid_rate=0,
                                                 size_kb=(4, 12), feeds=feeds_from_contracts(self.contracts.values()))}

    @cached_property
    def contracts(self) -> dict[str, Any]:
        """The shipped JSON Kafka feeds that route to the partner (as curated_messages picks them)."""
        return {n: c for n, c in load_contracts().items() if any(r.partner == PARTNER for r in c.routes)
                and "kafka" in c.sources and c.format == "json"}

    def _versions(self, firsts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Two later versions of each message's record: same business key, new record id and content, through
        the real stage with the stack's keys (sealed fields are bound to their record id)."""
        from infra.local.partner.curated import kms_protectors, message
        from udfs.enrich import ReferenceData
        from udfs.ingest import Accepted, IngestStage
        from udfs.source import SourceRef

        stage = IngestStage(self.contracts, kms_protectors(self.cfg.phi, (c.phi_policy for c in
                                                                          self.contracts.values())), ReferenceData())
        later: list[dict[str, Any]] = []
        for v in (2, 3):
            for offset, first in enumerate(firsts):
                g = self.generated[first["record_id"]]
                record = json.loads(g.payload)
                record |= {"record_id": record["record_id"][:-2] + f"V{v}", "notes": [f"version {v}"]}
                source = SourceRef.from_kafka(f"raw.{g.feed}", 1, offset)
                accepted = [o for o in stage.process(json.dumps(record).encode(), source, int(time.time() * 1000))
                            if isinstance(o, Accepted) and f"partner:{PARTNER}" in o.routes]
                assert len(accepted) == 1, "a version of a partner record was not routed to the partner"
                later.append(message(accepted[0], source.pointer()))
                assert later[-1]["business_key"] == first["business_key"], "a version changed the business key"
        return later

    def _messages(self) -> list[list[dict[str, Any]]]:
        """Four waves of curated messages; in the second, VERSIONED accepted business keys get two later
        versions in the same transaction, so the versions are in flight together."""
        base = list(curated_messages(RECORDS, SEED, self.cfg.phi, PARTNER))
        q = RECORDS // 4
        versioned = [m for m in base[q:2 * q] if not rejected(self.standin, m["business_key"])][:VERSIONED]
        self.versioned_keys = sorted(m["business_key"] for m in versioned)
        return [base[:q], base[q:2 * q] + self._versions(versioned), base[2 * q:3 * q], base[3 * q:]]

    def setup(self) -> None:
        provision_credentials(aws_client(self.cfg.phi, "secretsmanager"), self.cfg.contracts[PARTNER], self.standin)
        create_missing_topics(self.cfg.bootstrap_servers, [self.cfg.topic(PARTNER)])

    def offer(self, wave: int) -> None:
        produce(self.cfg.bootstrap_servers, self.cfg.topic(PARTNER), self.wave_messages[wave],
                f"curated-t{self.run_id}-{wave}")

    def start(self) -> None:
        self.jobs.start("delivery")

    def kill_point(self, kill: int) -> None:
        before = stats(self.partner.url)["deliveries"]
        wait_until(lambda: stats(self.partner.url)["deliveries"] >= before + 10, 180,
                   f"progress before kill {kill + 1}", self.jobs.check_alive)

    def kill_delay_s(self, kill: int) -> float:
        return self.rng.uniform(0, 3)

    def kill(self) -> None:
        self.jobs.kill("delivery")

    def stop(self, timeout_s: float) -> int:
        return self.jobs.stop("delivery", timeout_s)

    def wanted(self) -> Counter[str]:
        """Deliveries the partner must see, per business key (versions count)."""
        return Counter(m["business_key"] for m in self.messages if m["business_key"] not in self.refused)

    def expected_dead(self) -> Counter[str]:
        """Dead-letter ids of the partner's refusals, each once."""
        return Counter({"p" + idempotency_key(PARTNER, m["business_key"], m["record_id"])[3:]: 1
                        for m in self.messages if m["business_key"] in self.refused})

    def progress(self) -> int:
        delivered = Counter(stats(self.partner.url)["deliveries_by_business_key"])
        return sum(min(delivered[k], n) for k, n in self.wanted().items())

    def total(self) -> int:
        return sum(self.wanted().values())

    def visible_when_offered(self, waves: int) -> int:
        return sum(1 for wave in self.wave_messages[:waves] for m in wave if m["business_key"] not in self.refused)

    def done(self) -> bool:
        return super().done() and dead_letters(self.cfg.bootstrap_servers, self.cfg.dlq_topic)[0] == \
            self.expected_dead()

    def check_alive(self) -> None:
        self.jobs.check_alive()

    def after_stop(self) -> None:
        """A backfill: the job again, without state, under a new group, from offset 0. The ledger answers
        SKIP_ACKED for every delivered key (nothing is sent) and re-emits each dead letter with its id."""
        self.stats = stats(self.partner.url)
        self.letters = dead_letters(self.cfg.bootstrap_servers, self.cfg.dlq_topic)
        backfill = delivery_properties(self.run_id, self.home / "backfill", self.partner.url, self.contracts_dir,
                                       {"group.id": f"backfill-t{self.run_id}"})
        jobs = JobProcesses(backfill, self.home / "backfill" / "logs")
        jobs.start("delivery")
        try:
            wait_until(lambda: set(dead_letters(self.cfg.bootstrap_servers, self.cfg.dlq_topic)[0].values()) == {2},
                       180, "the backfill to re-read the whole topic", jobs.check_alive)
            time.sleep(5)  # records after the last dead letter in a partition are skipped too
            self.backfill = stats(self.partner.url)
        finally:
            jobs.stop_all()

    def close(self) -> None:
        self.jobs.stop_all()
        if self.partner is not None:
            self.partner.stop()
            self.partner = None

    @cached_property
    def ledger(self) -> list[dict[str, Any]]:
        """Every ledger item of this run."""
        return list(aws_client(self.cfg.phi, "dynamodb").scan(TableName=self.cfg.ledger_table)["Items"])


class Partner(Harness):
    """Each curated record reaches the partner once by business key, versions of one key in offered order."""

    run: PartnerRun

    def expected(self) -> Counter[str]:
        return self.run.wanted()

    def delivered(self) -> Counter[str]:
        return Counter(self.run.stats["deliveries_by_business_key"])

    def ordered_keys(self) -> list[str]:
        return self.run.versioned_keys

    def order(self, key: str) -> tuple[list[str], list[str]]:
        offered = [m["record_id"] for m in self.run.messages if m["business_key"] == key]
        by_idempotency_key = {idempotency_key(PARTNER, key, r): r for r in offered}
        refs = {item["idempotency_key"]["S"]: item.get("partner_ref", {}).get("S", "")
                for item in self.run.ledger if item["idempotency_key"]["S"] in by_idempotency_key}
        return offered, [by_idempotency_key[k] for k in sorted(refs, key=refs.__getitem__)]

    def _refused_raw(self) -> list[Any]:
        """The generated records behind the refused messages."""
        return [self.run.generated[m["record_id"]] for m in self.run.messages if m["business_key"] in self.run.refused]

    def error_texts(self) -> list[str]:
        logs = [p.read_text() for p in (self.run.home / "logs").glob("*.log")]
        return [*self.run.letters[1], *logs]

    def refused_texts(self) -> list[str]:
        return [g.payload.decode() for g in self._refused_raw()]

    def needles(self) -> Needles:
        # Generated names are real-looking words ("Health" is also in the partner's id): the curated records
        # cannot take made-up ones (tests.integration.test_phi_outputs.canary_name), so names are left out.
        raw = self._refused_raw()
        names = {v for g in raw for path, v in _leaves(json.loads(g.payload)) if path.endswith(("first_name",
                                                                                                 "last_name"))}
        return Needles([v for v in phi_values(raw, load_contracts()) if v not in names])

    def checks(self) -> dict[str, bool]:
        s, after = self.run.stats, self.run.backfill
        states = Counter(item["state"]["S"] for item in self.run.ledger)
        letters = [json.loads(t) for t in self.run.letters[1]]
        return {
            "the partner refused some records (422)": bool(self.run.refused),
            "each refusal is dead-lettered exactly once": self.run.letters[0] == self.run.expected_dead(),
            "each dead letter names the partner's 422": all(
                (d["reason_code"], d["partner_error"]) == ("http_422", "member_not_found") for d in letters),
            "the partner never answered 429": s["by_status"].get("429", 0) == 0,
            "at most rate + burst requests in any second": s["max_admitted_per_1s"] <= RATE + BURST,
            "the injected faults happened (503s, replays)": s["by_status"].get("503", 0) > 0 and s["replays"] > 0,
            "the backfill sent nothing": bool(after) and after["requests"] == s["requests"],
            "the ledger holds every key ACKED or DEAD": states == Counter(
                {ACKED: sum(self.run.wanted().values()), DEAD: len(self.run.expected_dead())}),
        }
