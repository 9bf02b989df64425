"""The per-record delivery protocol (connectors/partners/sender.py) against the partner stand-in and the real
DynamoDB, KMS and Secrets Manager APIs of the local stack: exactly once per business key under injected
faults, conformance to the partner's limit, Retry-After, dead letters, the breaker, auth failures."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.kms import aws_client
from connectors.partners.ledger import DeliveryLedger, ensure_ledger_table
from connectors.partners.sender import (
    ALREADY_DEAD,
    ALREADY_DELIVERED,
    DEAD_LETTER,
    DELIVERED,
    DeliveryFailed,
    Outcome,
    PartnerSender,
)
from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups
from connectors.secrets import put_secret
from infra.local.partner.curated import curated_messages
from infra.local.partner.harness import (
    PARTNER,
    delivery_properties,
    provision_credentials,
    standin_config,
    write_contract,
)
from infra.local.partner.rules import PartnerConfig, rejected
from infra.local.partner.server import PartnerHandle, start_in_thread
from infra.local.settings import StackSettings
from jobs.partner_delivery import DeliveryConfig, load_delivery_config, make_senders
from udfs.delivery import BreakerState, idempotency_key

pytestmark = pytest.mark.integration

FAST_RETRY = {"max_attempts": 8, "base_delay_s": 0.05, "max_delay_s": 0.2, "max_retry_after_s": 5, "auth_retries": 1}


@pytest.fixture(scope="module")
def messages(stack: StackSettings) -> list[dict[str, Any]]:
    """Synthetic curated messages (claims with reveals, and payments), protected with the stack's keys."""
    return list(curated_messages(40, 11, load_phi_config(read_property_groups(LOCAL_PROPERTIES)), PARTNER))


class Run:
    """One test's partner stand-in, run-unique config and sender (subtask 0 of 1)."""

    def __init__(self, tmp_path: Path, standin: PartnerConfig, **contract: Any) -> None:
        self.partner: PartnerHandle = start_in_thread(standin)
        run_id = uuid.uuid4().hex[:8]
        contracts = write_contract(tmp_path / "partners", **({"retry": FAST_RETRY} | contract))
        groups = read_property_groups(delivery_properties(run_id, tmp_path, self.partner.url, contracts))
        self.cfg: DeliveryConfig = load_delivery_config(groups)
        ensure_ledger_table(aws_client(self.cfg.phi, "dynamodb"), self.cfg.ledger_table)
        self.secrets = aws_client(self.cfg.phi, "secretsmanager")
        if standin.client_id:
            provision_credentials(self.secrets, self.cfg.contracts[PARTNER], standin)
        self.executor = ThreadPoolExecutor(8)

    def sender(self, owner: str = "") -> PartnerSender:
        senders = make_senders(self.cfg, 0, 1, owner or f"test/{uuid.uuid4().hex[:8]}", self.executor)
        sender: PartnerSender = senders[PARTNER]
        return sender

    def deliver(self, sender: PartnerSender, messages: list[dict[str, Any]]) -> list[Outcome]:
        async def main() -> list[Outcome]:
            async with aiohttp.ClientSession() as session:
                return list(await asyncio.gather(*(sender.deliver(session, m) for m in messages)))

        return asyncio.run(main())

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.partner.url + "/v1/_stats", timeout=10) as answer:  # noqa: S310 - loopback
            stats: dict[str, Any] = json.loads(answer.read())
        return stats

    def close(self) -> None:
        self.partner.stop()
        self.executor.shutdown()


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    made: list[Run] = []
    yield made
    for run in made:
        run.close()


def start(runs: list[Run], tmp_path: Path, standin: PartnerConfig, **contract: Any) -> Run:
    run = Run(tmp_path / f"run{len(runs)}", standin, **contract)
    runs.append(run)
    return run


def test_every_record_reaches_the_partner_once_under_503s_and_lost_responses(
        runs: list[Run], tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    standin = standin_config(400, 40, fail_rate=0.2, timeout_rate=0.1, hold_s=1.0, seed=5)
    run = start(runs, tmp_path, standin, timeout_s=0.4, lease_s=2, rate_limit={"requests_per_second": 400,
                                                                                  "burst": 40})
    sender = run.sender()
    outcomes = run.deliver(sender, messages)
    assert {o.result for o in outcomes} == {DELIVERED}
    stats = run.stats()
    assert stats["deliveries_by_business_key"] == {m["business_key"]: 1 for m in messages}
    assert stats["by_status"]["503"] > 0 and stats["replays"] > 0  # faults happened and were retried
    assert sender.stats.counts["retried"] > 0 and len(sender.stats.latencies_ms) == len(messages)

    # A replay (restore, backfill, another worker) sends nothing: every key is ACKED in the ledger.
    again = run.deliver(run.sender(), messages)
    assert {o.result for o in again} == {ALREADY_DELIVERED}
    assert run.stats()["requests"] == stats["requests"]


def test_revealed_fields_are_opened_only_for_the_granted_paths(
        runs: list[Run], tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    run = start(runs, tmp_path, standin_config(400, 40))
    claim = next(m for m in messages if m["record_type"] == "claim")
    captured: list[dict[str, Any]] = []
    sender = run.sender()
    original = sender._body

    def spy(message: Any) -> bytes:
        body = original(message)
        captured.append(json.loads(body))
        return body

    sender._body = spy  # type: ignore[method-assign]
    assert run.deliver(sender, [claim])[0].result == DELIVERED
    protected, opened = json.loads(claim["payload"]), sender._open_sealed(claim)  # type: ignore[misc]
    body = captured[0]
    assert body["member_id"] == opened["subscriber"]["member_id"] != protected["subscriber"]["member_id"]
    assert body["claim_id"] == protected["claim_id"] != opened["claim_id"]  # not granted: stays a token
    assert set(body) <= set(run.cfg.contracts[PARTNER].payload["claim"].fields)


def test_the_client_stays_within_the_partner_limit(
        runs: list[Run], tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    run = start(runs, tmp_path, standin_config(20, 4), rate_limit={"requests_per_second": 20, "burst": 4})
    outcomes = run.deliver(run.sender(), messages)
    assert {o.result for o in outcomes} == {DELIVERED}
    stats = run.stats()
    assert "429" not in stats["by_status"]
    assert stats["max_admitted_per_1s"] <= 20 + 4


def test_429_retry_after_pauses_the_partner_and_every_record_still_arrives_once(
        runs: list[Run], tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    # The contract claims 200/s, the partner allows 10/s: only Retry-After keeps the client in line.
    run = start(runs, tmp_path, standin_config(10, 2), concurrency=2,
                rate_limit={"requests_per_second": 200, "burst": 20})
    subset = messages[:20]
    began = time.monotonic()
    sender = run.sender()
    outcomes = run.deliver(sender, subset)
    elapsed = time.monotonic() - began
    stats = run.stats()
    assert {o.result for o in outcomes} == {DELIVERED}
    assert stats["deliveries_by_business_key"] == {m["business_key"]: 1 for m in subset}
    refused = stats["by_status"].get("429", 0)
    assert refused == sender.stats.counts["rate_limited"] > 0
    # Honouring "Retry-After: 1" means at most `concurrency` refusals per pause; ignoring it (retrying after
    # 50-200 ms of back-off) would draw several per record.
    assert refused <= 2 * (elapsed + 1)


def test_a_validation_refusal_is_dead_lettered_at_once_with_the_partner_code_and_no_phi(
        runs: list[Run], tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    standin = standin_config(400, 40, reject_fraction=0.3)
    run = start(runs, tmp_path, standin)
    outcomes = run.deliver(run.sender(), messages)
    refused = {m["business_key"] for m in messages if rejected(standin, m["business_key"])}
    assert refused and {o.business_key for o in outcomes if o.result == DEAD_LETTER} == refused
    letters = [json.loads(o.dead_letter(1) or "") for o in outcomes if o.result == DEAD_LETTER]
    for letter in letters:
        assert (letter["reason_code"], letter["status"], letter["partner_error"], letter["attempts"]) == (
            "http_422", 422, "member_not_found", 1)
        assert set(letter) == {"dead_letter_id", "stage", "reason_code", "category", "partner", "feed", "record_type",
                               "record_id", "business_key", "idempotency_key", "attempts", "status",
                               "partner_error", "dead_at_ms"}
    again = run.deliver(run.sender(), [m for m in messages if m["business_key"] in refused])
    assert {o.result for o in again} == {ALREADY_DEAD}
    assert {json.loads(o.dead_letter(2) or "")["dead_letter_id"] for o in again} == {
        letter["dead_letter_id"] for letter in letters}


def test_retries_are_bounded_then_the_record_is_dead_lettered(
        runs: list[Run], tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    run = start(runs, tmp_path, standin_config(400, 40, fail_rate=1.0),
                retry=FAST_RETRY | {"max_attempts": 3}, circuit_breaker={"failure_threshold": 1000, "cooldown_s": 1})
    outcome = run.deliver(run.sender(), messages[:1])[0]
    assert (outcome.result, outcome.reason, outcome.attempts) == (DEAD_LETTER, "retries_exhausted_http_503", 3)
    assert run.stats()["by_status"] == {"503": 3}


def test_an_open_breaker_holds_records_without_spending_their_attempts(
        runs: list[Run], tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    # A cool-down longer than the test, and the breaker opened by one record whose attempts are
    # sequential: however slow the machine, exactly 3 requests reach the partner. (Ten records sent at
    # once had all sent their first request before the third failure came back on a busy machine.)
    run = start(runs, tmp_path, standin_config(400, 40, fail_rate=1.0),
                circuit_breaker={"failure_threshold": 3, "cooldown_s": 600})
    sender = run.sender()
    breaker = sender.gate.breaker

    async def main() -> tuple[int, set[asyncio.Task[Outcome]]]:
        async with aiohttp.ClientSession() as session:
            tasks = {asyncio.create_task(sender.deliver(session, messages[0]))}
            for _ in range(600):  # 30 s at most; FAST_RETRY backs off 0.05-0.2 s between attempts
                if breaker.state is BreakerState.OPEN:
                    break
                await asyncio.sleep(0.05)
            assert breaker.state is BreakerState.OPEN
            tasks |= {asyncio.create_task(sender.deliver(session, m)) for m in messages[1:10]}
            done, pending = await asyncio.wait(tasks, timeout=1.5)
            seen: int = (await asyncio.to_thread(run.stats))["requests"]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            return seen, done

    seen, done = asyncio.run(main())
    assert not done  # nobody was dead-lettered while the partner was down, and nobody gave up
    assert seen == 3  # the 3 failures that opened it; the 10 held records spent no attempt


def test_refused_credentials_fail_the_job_loudly_after_bounded_retries(
        runs: list[Run], tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    standin = standin_config(400, 40)
    run = start(runs, tmp_path, standin)
    put_secret(run.secrets, run.cfg.contracts[PARTNER].auth.secret_id,
               {"client_id": "medistream-local", "client_secret": "not-the-secret"})
    with pytest.raises(DeliveryFailed, match="http_401") as failure:
        run.deliver(run.sender(), messages[:1])
    secret = standin.client_secret or ""
    assert secret and "not-the-secret" not in str(failure.value) and secret not in str(failure.value)
    assert run.stats()["deliveries"] == 0


def test_a_partner_back_from_an_outage_that_forgot_our_token_gets_a_fresh_one_not_a_failed_job(
        runs: list[Run], tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    """Found on the cluster (test_job_control): records spent their attempts on a partner that was down; it came
    back as a new instance that no longer honoured the token issued before, and the first 401 failed the job
    because the refresh budget was counted in attempts. Now the first 401 of a record refreshes the token."""
    standin = standin_config(400, 40)
    # Backoff 0.5-1 s: once two attempts have failed, six more are seconds away, whatever the machine's load.
    run = start(runs, tmp_path, standin, retry=FAST_RETRY | {"max_attempts": 8, "base_delay_s": 0.5, "max_delay_s": 1},
                circuit_breaker={"failure_threshold": 1000, "cooldown_s": 1})
    sender = run.sender()
    assert [o.result for o in run.deliver(sender, messages[:1])] == [DELIVERED]  # a token is cached now
    port = int(run.partner.url.rsplit(":", 1)[1])
    run.partner.stop()  # the outage: nothing listens, every attempt is a connection error

    async def main() -> Outcome:
        async with aiohttp.ClientSession() as session:
            delivery = asyncio.create_task(sender.deliver(session, messages[1]))
            while sender.stats.counts["retried"] < 2:  # two attempts failed on the closed port
                await asyncio.sleep(0.01)
            run.partner = await asyncio.to_thread(start_in_thread, dataclasses.replace(standin, port=port))
            return await delivery

    outcome = asyncio.run(main())
    assert outcome.result == DELIVERED, outcome
    stats = run.stats()  # the new instance: one 401 for the forgotten token, then the delivery
    assert stats["by_status"].get("401", 0) >= 1 and stats["deliveries_by_business_key"] == {
        messages[1]["business_key"]: 1}


def test_hmac_signed_requests_are_accepted_and_a_wrong_key_fails(
        runs: list[Run], tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    key = uuid.uuid4().hex
    auth = {"type": "hmac", "secret_id": f"medistream/partners/test-{key[:8]}/hmac",
            "header": "X-Partner-Signature", "timestamp_header": "X-Partner-Timestamp"}
    run = start(runs, tmp_path, PartnerConfig(rate=400, burst=40, hmac_secret=key.encode()), auth=auth)
    put_secret(run.secrets, auth["secret_id"], {"key": key})
    payments = [m for m in messages if m["record_type"] == "payment"][:3]
    assert {o.result for o in run.deliver(run.sender(), payments)} == {DELIVERED}
    put_secret(run.secrets, auth["secret_id"], {"key": "another-key"})
    with pytest.raises(DeliveryFailed, match="http_401"):
        run.deliver(run.sender(), [m for m in messages if m["record_type"] == "payment"][3:4])


def test_a_crashed_workers_live_lease_is_waited_out_then_resent_with_the_same_key(
        runs: list[Run], tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    run = start(runs, tmp_path, standin_config(400, 40), lease_s=1.5, timeout_s=1)
    message = messages[0]
    key = idempotency_key(PARTNER, message["business_key"], message["record_id"])
    ledger = DeliveryLedger(aws_client(run.cfg.phi, "dynamodb"), run.cfg.ledger_table)
    assert ledger.begin(PARTNER, key, "crashed-worker", 1.5).attempts == 1  # it sent, then died
    sender = run.sender()
    outcome = run.deliver(sender, [message])[0]
    assert (outcome.result, outcome.attempts, outcome.idempotency_key) == (DELIVERED, 2, key)
    assert sender.stats.counts["busy_waits"] >= 1
    assert run.stats()["deliveries_by_business_key"] == {message["business_key"]: 1}
