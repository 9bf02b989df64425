"""The fraud detectors' operator: one member's evidence in keyed state, signals out (udfs/fraud.py holds the rules).

A thin wrapper (STYLE.md). Its facts come from the ingest operator's accepted rows through a JVM projection
(`fraud_facts`, the Java `FraudFacts`, decision 0054): each accepted claim and eligibility record with a member
token becomes Row(member token, Row(FACT_FIELDS)), keyed by the member's token; the Python ingest operator builds
nothing for the detectors. open() loads the rules; process_element() and on_timer() run udfs.fraud.MemberDetector
over the member's state and emit a row per signal. The state is builtins only, in two parts (decision 0044): the
member's own (udfs.fraud.state_to_plain) in a value, and the pieces of evidence (a providers window, a service day)
in a map of which a record reads and writes only the entries it adds to. Both have a time-to-live: the member's own
part and each piece go `state_ttl_days` after the last record that wrote them. A signal count per rule is a Flink
counter (label: the rule's name).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream.functions import KeyedProcessFunction

from connectors.metrics.flink_counters import METRIC_GROUP, FlinkCounters
from fresh_imports import FreshImports
from udfs.fraud import (
    RULES_FILE,
    SIGNAL_FIELDS,
    SIGNAL_INT_FIELDS,
    SIGNAL_LONG_FIELDS,
    MemberDetector,
    MemberState,
    Signal,
    fact_of,
    load_rules,
    signal_values,
    state_from_plain,
    state_to_plain,
)

# The accepted row's columns a fact is made of (udfs.fraud.fact_of reads them), in the fact row's order.
FACT_FIELDS = ["member_token", "record_type", "business_key", "feed", "ingested_at_ms", "billing_npi",
               "frequency_code", "service_date_from", "service_lines", "coverage_start", "coverage_end"]
FACTS_UID = "fraud-facts"
SIGNAL_TYPE = Types.ROW_NAMED(SIGNAL_FIELDS, [
    Types.INT() if f in SIGNAL_INT_FIELDS else Types.LONG() if f in SIGNAL_LONG_FIELDS else Types.STRING()
    for f in SIGNAL_FIELDS])


def fact_type(accepted_type: Any) -> Any:
    """The fact row's type: FACT_FIELDS with their types in `accepted_type` (the ingest operator's ROW_NAMED)."""
    names, types = accepted_type.get_field_names(), accepted_type.get_field_types()
    return Types.ROW_NAMED(FACT_FIELDS, [types[names.index(f)] for f in FACT_FIELDS])


def fraud_facts(accepted: Any, accepted_type: Any) -> Any:
    """`accepted` (rows of `accepted_type`) as Row(member token, fact row) in the JVM: claims and eligibility with
    a member token only, chained to the ingest operator, no crossing into Python (com.medistream.flink.FraudFacts)."""
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    names = accepted_type.get_field_names()
    fields = gateway.new_array(gateway.jvm.int, len(FACT_FIELDS))
    for i, name in enumerate(FACT_FIELDS):
        fields[i] = names.index(name)
    project = gateway.jvm.com.medistream.flink.FraudFacts(names.index("record_type"), fields)
    keyed_type = Types.ROW([Types.STRING(), fact_type(accepted_type)]).get_java_type_info()
    return DataStream(accepted._j_data_stream.flatMap(project, keyed_type).uid(FACTS_UID).name(FACTS_UID))


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

    def _rows(self, signals: list[Signal]) -> Iterator[Row]:
        now_ms = int(time.time() * 1000)
        for signal in signals:
            self._metrics.inc("fraudSignals", (("rule", signal.rule),))
            yield Row(*signal_values(signal, now_ms))
        if signals:
            self._metrics.maybe_flush(now_ms)
