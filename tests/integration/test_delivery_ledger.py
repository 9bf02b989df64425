"""Integration tests: the delivery ledger on the local stack's DynamoDB (moto server, real wire API)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from connectors.partners.ledger import (
    ACKED,
    DEAD,
    IN_FLIGHT,
    AckResponse,
    DeliveryLedger,
    LeaseLost,
    LedgerError,
    Reopen,
    Verdict,
    ensure_ledger_table,
)
from infra.local import moto_server
from infra.local.settings import StackSettings
from udfs.delivery import idempotency_key

pytestmark = pytest.mark.integration

PARTNER = "clearwater_health"


class Clock:
    """Milliseconds the test moves by hand, so lease expiry needs no sleeping."""

    def __init__(self, now: int = 1_800_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def table(stack: StackSettings) -> Iterator[str]:
    """A new ledger table for this test, deleted afterwards."""
    name = f"ledger-test-{uuid.uuid4().hex[:12]}"
    client = moto_server.client(stack, "dynamodb")
    ensure_ledger_table(client, name)
    try:
        yield name
    finally:
        client.delete_table(TableName=name)


def ledger(stack: StackSettings, table: str, clock: Clock | None = None) -> DeliveryLedger:
    """A ledger with its own client, as a separate worker would have."""
    client = moto_server.client(stack, "dynamodb")
    return DeliveryLedger(client, table, clock_ms=clock) if clock else DeliveryLedger(client, table)


def key(n: int = 1) -> str:
    return idempotency_key(PARTNER, f"bk-{n}", f"rec-{n}")


def test_send_then_ack_then_never_again(stack: StackSettings, table: str) -> None:
    ensure_ledger_table(moto_server.client(stack, "dynamodb"), table)  # idempotent on an existing table
    led = ledger(stack, table)
    first = led.begin(PARTNER, key(), "worker-a", lease_s=30)
    assert (first.verdict, first.attempts, first.lease_owner) == (Verdict.SEND, 1, "worker-a")
    assert led.ack(PARTNER, key(), "worker-a", AckResponse(201, "cw-778899")) is True
    assert led.ack(PARTNER, key(), "worker-a", AckResponse(201, "cw-778899")) is False  # a repeated ack is a no-op
    for owner in ("worker-a", "worker-b"):
        again = led.begin(PARTNER, key(), owner, lease_s=30)
        assert again.verdict is Verdict.SKIP_ACKED and again.response == AckResponse(201, "cw-778899")
    stored = led.get(PARTNER, key())
    assert stored is not None and stored["state"] == ACKED and stored["attempts"] == 1
    assert "lease_expires_ms" not in stored
    # another key is independent
    assert led.begin(PARTNER, key(2), "worker-b", lease_s=30).verdict is Verdict.SEND


def test_crash_before_ack_resends_with_the_same_key_after_the_lease(stack: StackSettings, table: str) -> None:
    clock = Clock()
    led = ledger(stack, table, clock)
    assert led.begin(PARTNER, key(), "worker-a", lease_s=60).verdict is Verdict.SEND
    # worker-a "crashes" after sending: no ack. Within the lease another worker must wait.
    clock.now += 59_000
    busy = led.begin(PARTNER, key(), "worker-b", lease_s=60)
    assert (busy.verdict, busy.lease_owner, busy.attempts) == (Verdict.BUSY, "worker-a", 1)
    assert busy.lease_expires_ms == clock.now + 1_000
    clock.now += 1_000  # the lease has run out: the same key is sent again
    resend = led.begin(PARTNER, key(), "worker-b", lease_s=60)
    assert (resend.verdict, resend.attempts, resend.lease_owner) == (Verdict.SEND, 2, "worker-b")
    # the crashed owner comes back late: it no longer holds the lease
    with pytest.raises(LeaseLost, match="worker-a does not hold the lease"):
        led.ack(PARTNER, key(), "worker-a", AckResponse(200))
    assert led.ack(PARTNER, key(), "worker-b", AckResponse(200, "cw-1")) is True
    assert led.begin(PARTNER, key(), "worker-a", lease_s=60).verdict is Verdict.SKIP_ACKED
    # and a late ack by the old owner after the new one acked is harmless
    assert led.ack(PARTNER, key(), "worker-a", AckResponse(200)) is False


def test_owner_retries_within_its_lease_and_dead_is_final(stack: StackSettings, table: str) -> None:
    clock = Clock()
    led = ledger(stack, table, clock)
    assert led.begin(PARTNER, key(), "worker-a", lease_s=10).attempts == 1
    clock.now += 2_000  # a retriable failure; the owner re-sends under its own live lease
    again = led.begin(PARTNER, key(), "worker-a", lease_s=10)
    assert (again.verdict, again.attempts, again.lease_expires_ms) == (Verdict.SEND, 2, clock.now + 10_000)
    with pytest.raises(LeaseLost):
        led.dead(PARTNER, key(), "worker-b", "http_422")
    with pytest.raises(ValueError, match="reason"):
        led.dead(PARTNER, key(), "worker-a", "member John Smith not found")  # free text could hold PHI
    assert led.dead(PARTNER, key(), "worker-a", "http_422") is True
    assert led.dead(PARTNER, key(), "worker-a", "http_422") is False
    clock.now += 3_600_000
    dead = led.begin(PARTNER, key(), "worker-b", lease_s=10)
    assert (dead.verdict, dead.reason) == (Verdict.SKIP_DEAD, "http_422")
    with pytest.raises(LeaseLost):
        led.ack(PARTNER, key(), "worker-a", AckResponse(200))
    stored = led.get(PARTNER, key())
    assert stored is not None and stored["state"] == DEAD and stored["attempts"] == 2


def test_ack_and_dead_need_a_begun_key(stack: StackSettings, table: str) -> None:
    led = ledger(stack, table)
    with pytest.raises(LeaseLost, match="state missing"):
        led.ack(PARTNER, key(9), "worker-a", AckResponse(200))
    assert led.get(PARTNER, key(9)) is None
    with pytest.raises(ValueError, match="HTTP status"):
        AckResponse(42)
    with pytest.raises(ValueError, match="partner_ref"):
        AckResponse(200, "Jane Doe, DOB 1980-01-01")


@pytest.mark.parametrize("round_", range(5))
def test_racing_workers_get_exactly_one_send(stack: StackSettings, table: str, round_: int) -> None:
    workers, barrier = 4, threading.Barrier(4)
    ledgers = [ledger(stack, table) for _ in range(workers)]
    verdicts: list[Verdict] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        barrier.wait()
        decision = ledgers[i].begin(PARTNER, key(round_), f"worker-{i}", lease_s=30)
        with lock:
            verdicts.append(decision.verdict)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(v.value for v in verdicts) == ["busy", "busy", "busy", "send"]
    stored = ledgers[0].get(PARTNER, key(round_))
    assert stored is not None and stored["state"] == IN_FLIGHT and stored["attempts"] == 1


def test_racing_ack_and_takeover_leave_one_consistent_outcome(stack: StackSettings, table: str) -> None:
    """Many keys, 4 workers each looping begin -> ack: every key is sent exactly once and acked once."""
    keys = [key(100 + i) for i in range(40)]
    sends: list[tuple[str, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        led = ledger(stack, table)
        barrier.wait()
        for k in keys:
            decision = led.begin(PARTNER, k, f"worker-{i}", lease_s=30)
            if decision.verdict is Verdict.SEND:
                with lock:
                    sends.append((k, f"worker-{i}"))
                led.ack(PARTNER, k, f"worker-{i}", AckResponse(200))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(k for k, _ in sends) == sorted(keys)
    check = ledger(stack, table)
    assert all((check.get(PARTNER, k) or {}).get("state") == ACKED for k in keys)


def test_a_table_with_another_key_is_refused(stack: StackSettings) -> None:
    client = moto_server.client(stack, "dynamodb")
    name = f"ledger-wrong-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=name, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    try:
        with pytest.raises(LedgerError, match="partner HASH, idempotency_key RANGE"):
            ensure_ledger_table(client, name)
    finally:
        client.delete_table(TableName=name)


def test_reopen_turns_only_a_dead_key_into_a_send_of_the_same_key_once_per_replay(
        stack: StackSettings, table: str) -> None:
    clock = Clock()
    led = ledger(stack, table, clock)
    assert led.reopen(PARTNER, key(), "p1#1") is Reopen.MISSING  # never begun: nothing to reopen
    assert led.get(PARTNER, key()) is None
    led.begin(PARTNER, key(), "worker-a", lease_s=30)
    assert led.reopen(PARTNER, key(), "p1#1") is Reopen.IN_FLIGHT  # being sent: not dead, untouched
    assert led.dead(PARTNER, key(), "worker-a", "http_422", 422, "member_not_found")
    before = led.get(PARTNER, key())

    clock.now += 5_000
    assert led.reopen(PARTNER, key(), "p1#1") is Reopen.REOPENED
    item = led.get(PARTNER, key())
    assert item is not None and "state" not in item and "dead_reason" not in item and "response_status" not in item
    assert (item["replay_of"], item["replays"], item["replayed_at_ms"], item["attempts"]) == (
        "p1#1", 1, clock.now, before["attempts"] if before else None)
    # The same replay again (a crash after the write): nothing changes. Another replay: pending.
    assert led.reopen(PARTNER, key(), "p1#1") is Reopen.ALREADY
    assert led.reopen(PARTNER, key(), "p1#2") is Reopen.PENDING
    assert led.get(PARTNER, key()) == item

    # The delivery job's next begin sends it, under the same key, as attempt 2; then it is delivered.
    again = led.begin(PARTNER, key(), "worker-b", lease_s=30)
    assert (again.verdict, again.attempts) == (Verdict.SEND, 2)
    assert led.reopen(PARTNER, key(), "p1#1") is Reopen.IN_FLIGHT
    assert led.ack(PARTNER, key(), "worker-b", AckResponse(201, "cw-1"))
    assert led.reopen(PARTNER, key(), "p1#1") is Reopen.ACKED  # delivered: a replay never resets it
    assert led.reopen(PARTNER, key(), "p1#3") is Reopen.ACKED
    stored = led.get(PARTNER, key())
    assert stored is not None and stored["state"] == ACKED and stored["replay_of"] == "p1#1"
    assert led.begin(PARTNER, key(), "worker-c", lease_s=30).verdict is Verdict.SKIP_ACKED

    # Dead again after a replay: the next replay reopens it again and counts it.
    led.begin(PARTNER, key(2), "worker-a", lease_s=30)
    led.dead(PARTNER, key(2), "worker-a", "retries_exhausted_http_503", 503)
    assert led.reopen(PARTNER, key(2), "p2#1") is Reopen.REOPENED
    led.begin(PARTNER, key(2), "worker-b", lease_s=30)
    led.dead(PARTNER, key(2), "worker-b", "retries_exhausted_http_503", 503)
    assert led.reopen(PARTNER, key(2), "p2#2") is Reopen.REOPENED
    second = led.get(PARTNER, key(2))
    assert second is not None and (second["replays"], second["replay_of"]) == (2, "p2#2")
