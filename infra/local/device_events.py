"""Synthetic patient-monitoring device events, each with what the pipeline must do with it (decision 0040).

Fake devices and fake MRNs only (random digits; no name, no person). Every device reads its vitals once per
`interval_ms` on its own timeline, in the past of the moment of generation; events are listed in the order the
fleet sends them (by nominal time), and some are bent on purpose, each kind with a margin that makes its outcome
certain under the job's event-time policy (udfs.event_time.EventTimePolicy), whatever the interleaving of devices:

| kind | what it is | expected |
|---|---|---|
| `in_order` | the reading at its nominal time | lands |
| `out_of_order` | sent 1-3 s after its time (inside the out-of-orderness bound) | lands |
| `allowed_late` | behind the device's watermark, inside the allowed lateness | lands |
| `late` | behind the watermark by more than the allowed lateness (a reading sent minutes late) | `late_event` |
| `clock_skew` | the device's clock two days ahead (event and send time) | `clock_skew` |
| `duplicate` | the previous reading again (a producer's retry): same record, new Kinesis record | dropped by dedup |
| `invalid` | SpO2 above 100 % | `schema_violation` |

A bent event always follows a plain in-order reading of its device, so the device's latest accepted time when it
arrives is that reading's. The outcome of every kind is decided by construction here and checked by the job's own
logic only in tests (tests/unit/test_device_events.py); the ground truth shares no code with the job's gate.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

FEED = "ward_monitors_devices"
RECORD_TYPE = "device_event"
SCHEMA_VERSION = "1.0"
KINDS = ("in_order", "out_of_order", "allowed_late", "late", "clock_skew", "duplicate", "invalid")
Expect = Literal["land", "dead_letter", "dropped"]
# The job's default policy (udfs.event_time.EventTimePolicy); the margins below are chosen against it.
OUT_OF_ORDERNESS_MS, ALLOWED_LATENESS_MS, MAX_CLOCK_SKEW_MS = 5_000, 30_000, 300_000
_SKEW_AHEAD_MS = 2 * 86_400_000  # a clock two days ahead: skewed for any send within two days of generation
_NAMESPACE = uuid.UUID("0d7c2e91-5a4b-4f1e-8c3a-6b9e2d4f7a10")
_KIND_OF_DEVICE = ("bedside_monitor", "pulse_oximeter", "telemetry_patch", "bp_cuff", "ventilator")
_UNITS = ("ICU", "ED", "MEDSURG", "TELE", "NICU")


@dataclass(frozen=True)
class DeviceEvent:
    """One event as put on the stream (its partition key is the device id) and what must become of it."""

    record_id: str
    device_id: str  # the Kinesis partition key
    device: int  # the device's index in the fleet (the ground truth names devices by it, not by id)
    payload: bytes
    event_ms: int
    kind: str
    expect: Expect
    reason: str | None  # the dead letter's reason code when expect is dead_letter

    @property
    def payload_sha256(self) -> str:
        """SHA-256 of the payload (hex)."""
        return hashlib.sha256(self.payload).hexdigest()


@dataclass(frozen=True)
class Rates:
    """How often each bent kind replaces an in-order reading."""

    out_of_order: float = 0.05
    allowed_late: float = 0.02
    late: float = 0.02
    clock_skew: float = 0.01
    duplicate: float = 0.01
    invalid: float = 0.01


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _vitals(rng: random.Random) -> tuple[dict[str, Any], list[dict[str, str]]]:
    systolic = rng.randint(100, 150)
    vitals: dict[str, Any] = {"heart_rate_bpm": rng.randint(52, 118), "spo2_pct": rng.randint(90, 100),
              "systolic_mmhg": systolic, "diastolic_mmhg": rng.randint(55, systolic - 25),
              "respiratory_rate": rng.randint(10, 24), "temperature_c": f"{rng.randint(358, 386) / 10:.1f}"}
    alarms = []
    if vitals["spo2_pct"] < 93:
        alarms.append({"code": "SPO2_LOW", "priority": "high" if vitals["spo2_pct"] < 91 else "medium"})
    if vitals["heart_rate_bpm"] > 110:
        alarms.append({"code": "HR_HIGH", "priority": "low"})
    if rng.random() < 0.01:
        alarms.append({"code": "LEAD_OFF", "priority": "low"})
    return vitals, alarms


def generate_device_events(n: int, seed: int, devices: int = 20, interval_ms: int = 1_000,
                           now_ms: int | None = None, rates: Rates | None = None,
                           feed: str = FEED) -> list[DeviceEvent]:
    """`n` events of `devices` devices in send order, identical for identical arguments (and `now_ms`).

    The timeline ends a minute before `now_ms` (default: the time of the call), so no in-order reading is ahead
    of its arrival; its length is n / devices readings per device.
    """
    if n < 0 or devices < 1 or interval_ms < 100:
        raise ValueError("need n >= 0, devices >= 1 and interval_ms >= 100")
    rates = rates or Rates()
    rng = random.Random(seed)
    now = int(datetime.now(UTC).timestamp() * 1000) if now_ms is None else now_ms
    per_device = -(-n // devices)
    start = now - 60_000 - per_device * interval_ms
    fleet: list[dict[str, Any]] = [
        {"device_id": f"MON-{rng.getrandbits(40):010X}", "mrn": f"MRN{rng.randint(10**7, 10**8 - 1)}",
         "kind": rng.choice(_KIND_OF_DEVICE), "unit": rng.choice(_UNITS), "facility": "HOSPA",
         "offset": rng.randint(0, interval_ms - 1)} for _ in range(devices)]
    out: list[DeviceEvent] = []
    previous: dict[int, DeviceEvent] = {}  # each device's last plain in-order reading
    plain_run: dict[int, int] = {}  # in-order readings in a row per device
    ticks = sorted((start + k * interval_ms + fleet[d]["offset"], d) for d in range(devices)
                   for k in range(per_device))
    for nominal, d in ticks:
        if len(out) >= n:
            break
        kind = "in_order"
        if plain_run.get(d, 0) >= 3:  # a bent event follows plain in-order readings of its device
            roll = rng.random()
            for name in ("out_of_order", "allowed_late", "late", "clock_skew", "duplicate", "invalid"):
                roll -= getattr(rates, name)
                if roll < 0:
                    kind = name
                    break
        event = _event(rng, fleet[d], d, nominal, kind, previous.get(d), feed, seed, len(out))
        out.append(event)
        if kind == "in_order":
            previous[d], plain_run[d] = event, plain_run.get(d, 0) + 1
        else:
            plain_run[d] = 0
    return out


def _event(rng: random.Random, device: dict[str, Any], index: int, nominal: int, kind: str,
           previous: DeviceEvent | None, feed: str, seed: int, position: int) -> DeviceEvent:
    if kind == "duplicate" and previous is not None:
        return DeviceEvent(previous.record_id, previous.device_id, index, previous.payload, previous.event_ms,
                           kind, "dropped", None)
    jitter = rng.randint(137, 863)  # never a whole number of intervals: no two readings share a device and instant
    event_ms, sent_ms = nominal, nominal + rng.randint(20, 400)
    if kind == "out_of_order":
        event_ms = nominal - rng.randint(1, 2) * 1000 - jitter
    elif kind == "allowed_late":
        event_ms = nominal - OUT_OF_ORDERNESS_MS - rng.randint(3, ALLOWED_LATENESS_MS // 1000 - 5) * 1000 - jitter
    elif kind == "late":
        event_ms = nominal - OUT_OF_ORDERNESS_MS - ALLOWED_LATENESS_MS - rng.randint(60, 600) * 1000 - jitter
    elif kind == "clock_skew":
        event_ms, sent_ms = nominal + _SKEW_AHEAD_MS, sent_ms + _SKEW_AHEAD_MS
    vitals, alarms = _vitals(rng)
    if kind == "invalid":
        vitals["spo2_pct"] = rng.randint(101, 140)
    record_id = str(uuid.uuid5(_NAMESPACE, f"{seed}/{position}"))
    record = {
        "record_id": record_id, "record_type": RECORD_TYPE, "schema_version": SCHEMA_VERSION, "feed": feed,
        "sent_at": _rfc3339(max(sent_ms, event_ms)), "event_time": _rfc3339(event_ms),
        "device": {"device_id": device["device_id"], "kind": device["kind"], "facility_id": device["facility"],
                   "unit": device["unit"]},
        "patient": {"mrn": device["mrn"]}, "vitals": vitals, "alarms": alarms,
    }
    expect: Expect = "land"
    reason = {"late": "late_event", "clock_skew": "clock_skew", "invalid": "schema_violation"}.get(kind)
    if reason is not None:
        expect = "dead_letter"
    return DeviceEvent(record_id, device["device_id"], index, orjson.dumps(record), event_ms, kind, expect, reason)


def latest_per_device(events: Iterable[DeviceEvent]) -> dict[str, DeviceEvent]:
    """Each device's newest landed reading by (event time, record id): the row ops.device_events must hold.

    By device id, not by the fleet index: events of two generations (two fleets) may share indexes."""
    latest: dict[str, DeviceEvent] = {}
    for e in events:
        held = latest.get(e.device_id)
        if e.expect == "land" and (held is None or (e.event_ms, e.record_id) > (held.event_ms, held.record_id)):
            latest[e.device_id] = e
    return latest


def ground_truth_lines(events: Iterable[DeviceEvent]) -> Iterator[bytes]:
    """One JSON line per event: ids, kinds and expectations only (no device id, no MRN)."""
    for e in events:
        yield orjson.dumps({"record_id": e.record_id, "record_type": RECORD_TYPE, "device": e.device,
                            "event_ms": e.event_ms, "kind": e.kind, "expect": e.expect, "reason": e.reason,
                            "payload_sha256": e.payload_sha256}) + b"\n"


def produce_to_kafka(events: Iterable[DeviceEvent], bootstrap: str, topic: str) -> int:
    """Produce events to a raw topic as the Kinesis door lands them (key: the device id), without the door.

    For tests of the job side alone; the demo and the door's tests put them on the stream (put_to_kinesis).
    """
    from confluent_kafka import Producer

    from infra.local.publish import PublishError, ensure_topics

    ensure_topics(bootstrap, [topic])
    failed: list[str] = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    sent = 0
    for event in events:
        producer.produce(topic, value=event.payload, key=event.device_id.encode(),
                         on_delivery=lambda err, _msg: failed.append(str(err)) if err else None)
        producer.poll(0)
        sent += 1
    if producer.flush(60) or failed:
        raise PublishError(f"{len(failed)} device events failed on {topic} ({failed[:1]})")
    return sent


def put_to_kinesis(kinesis: Any, stream: str, events: Iterable[DeviceEvent], per_second: float | None = None,
                   batch: int = 100) -> list[tuple[str, float]]:
    """PutRecords in batches, partition key = the device id, at about `per_second` when given.

    Returns (record id, wall time the batch's call began) per event, for latency measurements. A batch with a failed
    record is retried for those records only (Kinesis reports them per record), so each event is put once; a retried
    record then follows records of its batch put after it (the local API fails none).
    """
    import time

    sent: list[tuple[str, float]] = []
    pending = list(events)
    started = time.monotonic()
    for first in range(0, len(pending), batch):
        chunk = pending[first:first + batch]
        began = time.time()
        entries = [{"Data": e.payload, "PartitionKey": e.device_id} for e in chunk]
        for _attempt in range(10):
            answer = kinesis.put_records(StreamName=stream, Records=entries)
            if not answer.get("FailedRecordCount"):
                break
            entries = [entry for entry, result in zip(entries, answer["Records"], strict=True)
                       if "ErrorCode" in result]
            time.sleep(0.2)
        else:
            raise RuntimeError(f"PutRecords kept failing for {len(entries)} device events on {stream}")
        sent += [(e.record_id, began) for e in chunk]
        if per_second:
            time.sleep(max(0.0, (first + len(chunk)) / per_second - (time.monotonic() - started)))
    return sent


def ensure_stream(kinesis: Any, stream: str, shards: int = 2) -> None:
    """Create the Kinesis data stream with `shards` shards unless it exists, and wait until it is active."""
    try:
        kinesis.describe_stream_summary(StreamName=stream)
    except kinesis.exceptions.ResourceNotFoundException:
        kinesis.create_stream(StreamName=stream, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def write_ground_truth(path: Any, events: Iterable[DeviceEvent]) -> int:
    """Write ground_truth_lines to `path`; return the count."""
    count = 0
    with open(path, "wb") as fh:
        for line in ground_truth_lines(events):
            fh.write(line)
            count += 1
    return count
