"""Event time of device events: the clock-skew check and each device's watermark with allowed lateness.

Pure logic (no Flink), used in two places of the ingest job (decision 0040):

- `check_clock` runs in the record stage (udfs/ingest.py): an event whose time is more than `max_clock_skew_ms`
  ahead of the moment its unit reached the platform (the raw topic's timestamp, set when the Kinesis door landed
  it, so a replay after a restore judges it the same way) is refused with `clock_skew`. It runs before the
  watermark, so a device whose clock jumped ahead never drags its watermark into the future.
- `DeviceWatermark` runs in the event-time gate (jobs/event_time_operator.py), keyed by the device's token: the
  device's watermark is the latest event time it has had accepted minus `out_of_orderness_ms`; an event behind it
  by more than `allowed_lateness_ms` is refused with `late_event`, any other event passes and may move it on.

Why a watermark per device and not Flink's per subtask: a subtask's watermark follows whichever devices and Kafka
partitions it happens to read first, so which event is late would depend on arrival interleaving (and restart from
nothing after a restore, watermarks not being checkpointed); one device whose clock runs ahead would make every other
device's readings late. A device's own events arrive in the order it sent them (the Kinesis partition key and the
raw topic's key are the device), and its watermark lives in keyed state, checkpointed with the source offsets: the
same input gives the same verdicts, restore or not, at any parallelism.
"""

from __future__ import annotations

from dataclasses import dataclass

from udfs.dead_letters import Rejected
from udfs.reasons import define

LATE_EVENT = define("late_event", "validation",
                    "an event's time is behind its device's watermark by more than the allowed lateness")
CLOCK_SKEW = define("clock_skew", "validation",
                    "an event's time is further ahead of its arrival than the allowed clock skew")
# Record types that carry an event time, and its field (an RFC 3339 instant, standardized to UTC).
EVENT_TIME_FIELDS = {"device_event": "event_time"}


@dataclass(frozen=True)
class EventTimePolicy:
    """The bounds of the `event_time` property group, in milliseconds."""

    out_of_orderness_ms: int = 5_000
    allowed_lateness_ms: int = 30_000
    max_clock_skew_ms: int = 300_000
    state_ttl_ms: int = 86_400_000  # a device silent this long starts a new watermark

    def __post_init__(self) -> None:
        for name in ("out_of_orderness_ms", "allowed_lateness_ms", "max_clock_skew_ms", "state_ttl_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"event time policy: {name} must not be negative")

    @property
    def late_behind_ms(self) -> int:
        """How far behind the latest accepted event time an event may be and still pass."""
        return self.out_of_orderness_ms + self.allowed_lateness_ms


def check_clock(event_ms: int, received_ms: int, policy: EventTimePolicy) -> None:
    """Raise Rejected(clock_skew) when the event claims a time too far after its arrival."""
    if event_ms - received_ms > policy.max_clock_skew_ms:
        raise Rejected(CLOCK_SKEW, f"event_time is more than {policy.max_clock_skew_ms} ms ahead of its arrival")


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one event: does it pass, and the device's latest accepted event time after it."""

    on_time: bool
    latest_ms: int
    behind_watermark: bool  # behind the watermark but within the allowed lateness (passes; counted apart)


class DeviceWatermark:
    """One device's watermark from the latest event time it had accepted (None: none yet)."""

    def __init__(self, policy: EventTimePolicy) -> None:
        self.policy = policy

    def judge(self, latest_ms: int | None, event_ms: int) -> Verdict:
        """The verdict for an event at `event_ms` when the device's latest accepted event time is `latest_ms`."""
        if latest_ms is None:
            return Verdict(True, event_ms, False)
        watermark = latest_ms - self.policy.out_of_orderness_ms
        if event_ms < watermark - self.policy.allowed_lateness_ms:
            return Verdict(False, latest_ms, True)
        return Verdict(True, max(latest_ms, event_ms), event_ms < watermark)

    def late_detail(self) -> str:
        """The dead letter's detail for a late event: the bounds, never a value of the event."""
        return (f"event_time is behind its device's watermark (out-of-orderness {self.policy.out_of_orderness_ms} ms) "
                f"by more than the allowed lateness of {self.policy.allowed_lateness_ms} ms")
