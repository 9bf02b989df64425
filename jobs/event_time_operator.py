"""The device events' event-time gate: each device's watermark in keyed state, late events to the dead letters.

A thin wrapper (STYLE.md) over udfs.event_time.DeviceWatermark (decision 0040). The ingest operator hands each
accepted device event to it on a side output (DEVICE_EVENTS), keyed by the device's token, as a plain tuple: the
event time, the accepted row, and the dead letter the event becomes if it is late (built by the ingest operator
with the same code as every other dead letter: PHI-free detail, the unit sealed under the dead-letter key). The gate
keeps one long per device (its latest accepted event time, with a time-to-live) and emits either the accepted row
(main output, then the job's dedup and sinks like any record) or the dead letter (LATE_EVENTS). The state is
checkpointed with the source offsets, so a restore gives every event the verdict it had.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag
from pyflink.datastream.functions import KeyedProcessFunction

from connectors.metrics.flink_counters import METRIC_GROUP, FlinkCounters
from fresh_imports import FreshImports
from udfs.event_time import LATE_EVENT, DeviceWatermark, EventTimePolicy
from udfs.rows import DEAD_LETTER_FIELDS

# Side output of the ingest operator: (device token, (event ms, accepted row values, late dead-letter row values)).
EVENT_TYPE = Types.PICKLED_BYTE_ARRAY()
DEVICE_EVENTS = OutputTag("device-events", Types.ROW_NAMED(["device_token", "event"], [Types.STRING(), EVENT_TYPE]))
# The gate's refusals, in the ingest operator's dead-letter row type (so the job unions the two).
LATE_EVENTS = OutputTag("late-events", Types.ROW_NAMED(
    DEAD_LETTER_FIELDS, [Types.LONG() if f == "dead_at_ms" else Types.STRING() for f in DEAD_LETTER_FIELDS]))


class EventTimeGate(FreshImports, KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by device token: an event in, its accepted row out (main) or its dead letter (LATE_EVENTS)."""

    def __init__(self, policy: EventTimePolicy) -> None:
        self.policy = policy

    def open(self, runtime_context: Any) -> None:
        from pyflink.datastream.state import ValueStateDescriptor

        from jobs.runtime import expiring

        self.watermark = DeviceWatermark(self.policy)
        self.latest = runtime_context.get_state(
            expiring(ValueStateDescriptor("device-latest-event-ms", Types.LONG()), self.policy.state_ttl_ms))
        self._metrics = FlinkCounters(runtime_context.get_metrics_group().add_group(METRIC_GROUP))

    def close(self) -> None:
        """Hand the last counts to Flink."""
        if hasattr(self, "_metrics"):
            self._metrics.flush()

    def process_element(self, value: tuple[Any, ...], ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        """Pass the event (and move the device's watermark) or dead-letter it as late."""
        event_ms, accepted, letter = value
        verdict = self.watermark.judge(self.latest.value(), event_ms)
        feed = letter[2]
        if verdict.on_time:
            self.latest.update(verdict.latest_ms)
            if verdict.behind_watermark:
                self._metrics.inc("lateEventsAllowed", (("feed", feed),))
            yield Row(*accepted)
        else:
            self._metrics.inc("deadLetters", (("feed", feed), ("reason", LATE_EVENT)))
            yield LATE_EVENTS, Row(*letter)
        now_ms = int(time.time() * 1000)
        if now_ms >= self._metrics.due_ms:
            self._metrics.maybe_flush(now_ms)
