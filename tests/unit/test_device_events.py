"""Device events (decision 0040): the record type, its PHI rules, the clock-skew check, each device's watermark,
and the generator's ground truth, all without a JVM."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, datetime

import orjson
import pytest

from connectors.properties import ConfigError, load_event_time_config
from infra.local.device_events import (
    FEED,
    KINDS,
    DeviceEvent,
    Rates,
    generate_device_events,
    ground_truth_lines,
    latest_per_device,
)
from infra.local.static_keys import static_protectors
from schemas import load_schema, validator
from schemas.contracts import load_contracts
from schemas.phi_policy import load_policy
from tests.unit import feed_samples
from udfs.dead_letters import DeadLetter, Rejected
from udfs.dedup import business_key_text
from udfs.event_time import CLOCK_SKEW, LATE_EVENT, DeviceWatermark, EventTimePolicy, check_clock
from udfs.ingest import Accepted, IngestStage, Refused
from udfs.projections import device_event_columns, instant_ms
from udfs.source import SourceRef

NOW_MS = 1_780_000_000_000
NOW = datetime.fromtimestamp(NOW_MS / 1000, UTC)
BENT = Rates(out_of_order=0.08, allowed_late=0.05, late=0.05, clock_skew=0.03, duplicate=0.03, invalid=0.03)


@pytest.fixture(scope="module")
def events() -> list[DeviceEvent]:
    return generate_device_events(3000, seed=11, devices=12, rates=BENT, now_ms=NOW_MS)


@pytest.fixture(scope="module")
def stage() -> IngestStage:
    contracts = load_contracts()
    return IngestStage({FEED: contracts[FEED]}, static_protectors())


def run_stage(stage: IngestStage, events: list[DeviceEvent]) -> list[Accepted | Refused]:
    """Each event as the Kinesis door lands it: one message on raw.<feed>, arriving a moment after generation."""
    out = []
    for offset, event in enumerate(events):
        source = SourceRef.from_kafka(f"raw.{FEED}", 0, offset)
        outcomes = list(stage.process(event.payload, source, NOW_MS + 500, NOW))
        assert len(outcomes) == 1
        out.append(outcomes[0])
    return out


def gate(outcomes: list[tuple[DeviceEvent, Accepted]], policy: EventTimePolicy) -> dict[str, bool]:
    """The job's gate over accepted events in arrival order: record id + position -> on time?"""
    latest: dict[str, int | None] = defaultdict(lambda: None)
    watermark, verdicts = DeviceWatermark(policy), {}
    for i, (_event, accepted) in enumerate(outcomes):
        device = accepted.columns["device_token"]
        verdict = watermark.judge(latest[device], accepted.columns["event_time_ms"])
        if verdict.on_time:
            latest[device] = verdict.latest_ms
        verdicts[f"{accepted.record_id}#{i}"] = verdict.on_time
    return verdicts


def test_the_generator_is_deterministic_makes_every_kind_and_a_clean_ground_truth(events: list[DeviceEvent]) -> None:
    assert generate_device_events(3000, seed=11, devices=12, rates=BENT, now_ms=NOW_MS) == events
    assert {e.kind for e in events} == set(KINDS)
    assert all(validator("device_event").is_valid(orjson.loads(e.payload)) for e in events if e.kind != "invalid")
    lines = b"".join(ground_truth_lines(events))
    for e in events:  # ids and expectations only: no device id, no MRN
        record = orjson.loads(e.payload)
        assert e.device_id.encode() not in lines and record["patient"]["mrn"].encode() not in lines
    assert all(e.event_ms < NOW_MS for e in events if e.kind != "clock_skew")


def test_the_stage_tokens_identifiers_and_refuses_skewed_and_invalid_events(
        stage: IngestStage, events: list[DeviceEvent]) -> None:
    outcomes = run_stage(stage, events)
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for event, outcome in zip(events, outcomes, strict=True):
        by_kind[event.kind][outcome.error.reason_code if isinstance(outcome, Refused) else "accepted"] += 1
        if isinstance(outcome, Accepted):
            record = orjson.loads(event.payload)
            for clear in (record["device"]["device_id"], record["patient"]["mrn"]):
                assert clear not in outcome.payload and clear not in str(outcome.columns)
            assert outcome.columns["patient_token"].startswith("t1.")
            assert outcome.columns["event_time_ms"] == event.event_ms
    assert set(by_kind["clock_skew"]) == {CLOCK_SKEW}
    assert set(by_kind["invalid"]) == {"schema_violation"}
    for kind in ("in_order", "out_of_order", "allowed_late", "late", "duplicate"):  # lateness is the gate's to judge
        assert set(by_kind[kind]) == {"accepted"}, kind


def test_the_gate_refuses_exactly_the_late_events_whatever_the_interleaving_of_devices(
        stage: IngestStage, events: list[DeviceEvent]) -> None:
    accepted = [(e, o) for e, o in zip(events, run_stage(stage, events), strict=True) if isinstance(o, Accepted)]
    policy = EventTimePolicy()
    expected = {f"{o.record_id}#{i}": e.kind != "late" for i, (e, o) in enumerate(accepted)}
    assert gate(accepted, policy) == expected
    # Another arrival order that keeps each device's own order (two raw-topic partitions read at any pace).
    rng = random.Random(5)
    queues: dict[str, list[int]] = defaultdict(list)
    for i, (_e, o) in enumerate(accepted):
        queues[o.columns["device_token"]].append(i)
    order: list[int] = []
    while any(queues.values()):
        device = rng.choice([d for d, q in queues.items() if q])
        order.append(queues[device].pop(0))
    reordered = gate([accepted[i] for i in order], policy)
    assert sorted(reordered.values()) == sorted(expected.values())
    assert {k.split("#")[0] for k, v in reordered.items() if not v} == \
        {accepted[i][1].record_id for i in range(len(accepted)) if accepted[i][0].kind == "late"}


def test_a_device_watermark_follows_the_bounds() -> None:
    watermark = DeviceWatermark(EventTimePolicy(out_of_orderness_ms=5_000, allowed_lateness_ms=30_000))
    assert watermark.judge(None, 1_000).on_time
    assert watermark.judge(100_000, 96_000) == watermark.judge(100_000, 96_000)
    inside = watermark.judge(100_000, 96_000)
    assert inside.on_time and not inside.behind_watermark and inside.latest_ms == 100_000
    allowed = watermark.judge(100_000, 65_000)  # 35 s behind: the watermark (95 s) minus 30 s lateness, exactly
    assert allowed.on_time and allowed.behind_watermark
    late = watermark.judge(100_000, 64_999)
    assert not late.on_time and late.latest_ms == 100_000
    assert watermark.judge(100_000, 130_000).latest_ms == 130_000
    assert "30000 ms" in watermark.late_detail()


def test_clock_skew_is_judged_against_arrival() -> None:
    policy = EventTimePolicy(max_clock_skew_ms=300_000)
    check_clock(1_300_000, 1_000_000, policy)  # exactly the bound: passes
    with pytest.raises(Rejected) as refused:
        check_clock(1_300_001, 1_000_000, policy)
    assert refused.value.reason_code == CLOCK_SKEW and "300000 ms" in refused.value.detail


def test_a_late_dead_letter_seals_the_unit_and_carries_no_clear_identifier(events: list[DeviceEvent]) -> None:
    event = next(e for e in events if e.kind == "late")
    sealed: list[bytes] = []

    def seal(feed: str, letter_id: str, data: bytes) -> str:
        sealed.append(data)
        return "sealed:opaque"

    letter = DeadLetter.from_error(Rejected(LATE_EVENT, DeviceWatermark(EventTimePolicy()).late_detail()),
                                   event.payload, SourceRef.from_kafka(f"raw.{FEED}", 1, 42), event.record_id, NOW_MS,
                                   seal, "message")
    body = letter.to_json()
    record = orjson.loads(event.payload)
    assert sealed == [event.payload] and letter.reason_code == "late_event" and letter.stage == "validation"
    for clear in (record["device"]["device_id"], record["patient"]["mrn"], record["event_time"]):
        assert clear not in body


def test_projection_business_key_and_policy_of_a_device_event(events: list[DeviceEvent]) -> None:
    record = orjson.loads(next(e for e in events if e.kind == "in_order").payload)
    columns = device_event_columns(record)
    assert columns["event_time_ms"] == instant_ms(record["event_time"])
    assert columns["event_date"] == record["event_time"][:10]
    assert columns["alarm_count"] == len(record["alarms"])
    assert instant_ms("2026-12-05T00:00:00.001Z") == 1_796_428_800_001
    first, again = (orjson.loads(e.payload) for e in events[:2])
    assert business_key_text(first, "device_event") != business_key_text(again, "device_event")
    duplicate = next(e for e in events if e.kind == "duplicate")
    original = next(e for e in events if e.record_id == duplicate.record_id and e.kind == "in_order")
    assert original.payload == duplicate.payload
    policy = load_policy("default-v1")
    assert policy.domains["device_event"] == "devices"
    assert {policy.rule("device_event", p).action for p in ("patient.mrn", "device.device_id")} == {"token"}
    assert load_schema("device_event")["properties"]["schema_version"] == {"const": "1.0"}


def test_the_ops_row_of_each_device_is_its_newest_landed_reading(events: list[DeviceEvent]) -> None:
    latest = latest_per_device(events)
    assert set(latest) == {e.device_id for e in events}
    for device, event in latest.items():
        landed = [e.event_ms for e in events if e.device_id == device and e.expect == "land"]
        assert event.event_ms == max(landed) and event.kind != "late"
    other = generate_device_events(300, seed=12, devices=12, rates=BENT, now_ms=NOW_MS)  # same indexes, new fleet
    assert len(latest_per_device([*events, *other])) == 24


def test_the_event_time_group_is_checked_by_name() -> None:
    assert load_event_time_config({}) == EventTimePolicy()
    policy = load_event_time_config({"event_time": {"out.of.orderness": "2 s", "allowed.lateness": "1 min",
                                                    "max.clock.skew": "10 min", "state.ttl": "2 d"}})
    assert policy == EventTimePolicy(2_000, 60_000, 600_000, 172_800_000)
    with pytest.raises(ConfigError, match="event_time.watermark"):
        load_event_time_config({"event_time": {"watermark": "5 s"}})
    with pytest.raises(ConfigError, match="event_time.allowed.lateness"):
        load_event_time_config({"event_time": {"allowed.lateness": "soon"}})
    with pytest.raises(ConfigError, match="state.ttl"):
        load_event_time_config({"event_time": {"state.ttl": "10 s"}})


def test_a_kinesis_fed_record_arrives_as_a_kafka_unit() -> None:
    contract = load_contracts()[FEED]
    assert contract.sources == ("kinesis",) and feed_samples.source(contract).kind == "kafka"
