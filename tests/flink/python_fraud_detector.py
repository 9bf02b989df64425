"""The fraud detectors' Python operator as the ingest job ran it until decision 0055 (jobs/fraud_operator.py at
eac99ab), kept for the upgrade test only: it writes the savepoint the JVM detectors must restore, and restores theirs.
Since state version 4 (decision 0060) it also deletes the pieces a record or timer removes.
Its logic is udfs.fraud.MemberDetector, the detectors' specification."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream.functions import KeyedProcessFunction

from connectors.metrics.flink_counters import METRIC_GROUP, FlinkCounters
from fresh_imports import FreshImports
from jobs.fraud_operator import FACT_FIELDS
from udfs.fraud import (
    RULES_FILE,
    MemberDetector,
    MemberState,
    Signal,
    fact_of,
    load_rules,
    signal_values,
    state_from_plain,
    state_to_plain,
)


class FraudDetector(FreshImports, KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by member token: a fact row (FACT_FIELDS) in, signal rows (SIGNAL_FIELDS) out."""

    def __init__(self, rules_path: str, namespace: str) -> None:
        self.rules_path = rules_path
        self.namespace = namespace  # the job's name, part of every signal id
        self.detector: MemberDetector  # built in open(), on the worker

    def open(self, runtime_context: Any) -> None:
        from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

        from jobs.runtime import expiring

        rules = load_rules(self.rules_path or RULES_FILE)  # empty: the shipped rules, found where this code is
        self.detector = MemberDetector(rules, self.namespace)
        self.evidence = runtime_context.get_state(
            expiring(ValueStateDescriptor("member-evidence", Types.PICKLED_BYTE_ARRAY()), rules.state_ttl_ms))
        self.pieces = runtime_context.get_map_state(expiring(
            MapStateDescriptor("member-evidence-pieces", Types.STRING(), Types.PICKLED_BYTE_ARRAY()),
            rules.state_ttl_ms))
        self._metrics = FlinkCounters(runtime_context.get_metrics_group().add_group(METRIC_GROUP))

    def close(self) -> None:
        """Hand the last counts to Flink."""
        if hasattr(self, "_metrics"):
            self._metrics.flush()

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Iterator[Row]:
        """Add one fact to its member's evidence; emit what it completes; wake up after the grace period."""
        columns = dict(zip(FACT_FIELDS, value, strict=True))
        fact = fact_of(columns["record_type"], columns, columns["business_key"], columns["feed"],
                       columns["ingested_at_ms"])
        if fact is None:
            return
        state = state_from_plain(self.evidence.value(), self.pieces.get)
        signals, decide_later = self.detector.on_fact(state, fact)
        self._save(state)
        if decide_later:
            timers = ctx.timer_service()
            timers.register_processing_time_timer(timers.current_processing_time() + self.detector.grace_ms)
        yield from self._rows(signals)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Row]:
        """The grace period ended: decide the member's pending claims against its coverage spans."""
        plain = self.evidence.value()
        if plain is None:
            return
        state = state_from_plain(plain, self.pieces.get)
        signals = self.detector.on_timer(state, ctx.get_current_key())
        self._save(state)
        yield from self._rows(signals)

    def _save(self, state: MemberState) -> None:
        """Write back the member's own part, and only the pieces this record or timer changed (or split off)."""
        self.evidence.update(state_to_plain(state))
        if state.changed:
            self.pieces.put_all(state.changed_pieces())
        for key in state.removed:  # state version 4's decided pending claims (decision 0060)
            self.pieces.remove(key)

    def _rows(self, signals: list[Signal]) -> Iterator[Row]:
        now_ms = int(time.time() * 1000)
        for signal in signals:
            self._metrics.inc("fraudSignals", (("rule", signal.rule),))
            yield Row(*signal_values(signal, now_ms))
        if signals:
            self._metrics.maybe_flush(now_ms)
