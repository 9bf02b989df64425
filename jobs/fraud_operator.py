"""The fraud detectors' operators: facts projected from the accepted rows, one member's evidence in keyed state,
signals out; all in the JVM (udfs/fraud.py holds the rules' specification and loads the rules file).

A thin wrapper (STYLE.md). Each accepted claim and eligibility record with a member token becomes Row(member token,
Row(FACT_FIELDS)) in the Java `FraudFacts` (decision 0054), keyed by the member's token, and the Java
`FraudDetectors` (decision 0055) decide the rules over that member's evidence: the logic of
udfs.fraud.MemberDetector, signal for signal, with its state in the same pickled builtins under the same uid,
names, key and timers, so a savepoint taken behind the Python detectors restores with every member's evidence.
The member's own part is one value; the pieces of evidence (a providers window, a service day) are a map of which a
fact reads and writes only the entries it adds to (decision 0044). Both have a time-to-live: the member's own part
and each piece go `state_ttl_days` after the last record that wrote them. A signal count per rule is a Flink
counter (label: the rule's name).
"""

from __future__ import annotations

from typing import Any

from pyflink.common import Types

from connectors.metrics.flink_counters import METRIC_GROUP
from udfs.fraud import RULES_FILE, SIGNAL_FIELDS, SIGNAL_INT_FIELDS, SIGNAL_LONG_FIELDS, load_rules

# The accepted row's columns a fact is made of (udfs.fraud.fact_of reads them), in the fact row's order.
FACT_FIELDS = ["member_token", "record_type", "business_key", "feed", "ingested_at_ms", "billing_npi",
               "frequency_code", "service_date_from", "service_lines", "coverage_start", "coverage_end"]
FACTS_UID = "fraud-facts"
DETECTORS_UID = "fraud-signals"  # the Python detectors' uid before decision 0055: their savepoints restore
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


def fraud_detectors(facts: Any, accepted_type: Any, rules_path: str, namespace: str) -> Any:
    """The signals of `facts` (fraud_facts' rows), keyed by member token, decided by the Java `FraudDetectors` under
    uid DETECTORS_UID with the rules of `rules_path` (empty: the shipped rules), checked here as the job is built."""
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway

    from jobs.runtime import MAP_CLEANUP_PER_ACCESS, VALUE_CLEANUP_PER_ACCESS, keyed_by_first_field

    rules = load_rules(rules_path or RULES_FILE)
    jvm = get_gateway().jvm
    rule_class = getattr(jvm.com.medistream.flink, "MemberEvidence$Rule")
    java_rules = jvm.java.util.ArrayList()
    for rule in rules.rules:
        java_rules.add(rule_class(rule.name, rule.kind, rule.window_days, rule.threshold, rule.grace_ms))
    detectors = jvm.com.medistream.flink.FraudDetectors(
        java_rules, namespace, rules.state_ttl_ms, rules.max_pending, VALUE_CLEANUP_PER_ACCESS,
        MAP_CLEANUP_PER_ACCESS, METRIC_GROUP)
    keyed = keyed_by_first_field(facts, Types.STRING(), fact_type(accepted_type))
    return DataStream(keyed._j_data_stream.process(detectors, SIGNAL_TYPE.get_java_type_info())
                      .uid(DETECTORS_UID).name(DETECTORS_UID))
