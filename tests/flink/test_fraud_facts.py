"""The fraud detectors' facts projected in the JVM (jobs.fraud_operator.fraud_facts, com.medistream.flink.FraudFacts,
decision 0054), on the mini-cluster in thread mode as the ingest job runs them: accepted rows in; the claims and
eligibility records with a member token out as fact rows; the detectors' signals (com.medistream.flink.FraudDetectors,
decision 0055) exactly those their specification (udfs.fraud.MemberDetector) gives for the same records."""

from __future__ import annotations

from typing import Any

import pytest

from udfs.rows import ACCEPTED_FIELDS, TEXT_ARRAYS_FIELDS

pytestmark = pytest.mark.flink

DAY = "2025-05-01"


def accepted(record_type: str, key: str, member: str | None, **columns: Any) -> Any:
    """An accepted row as the ingest operator emits it: these columns set, every other one empty."""
    from pyflink.common import Row

    values = {"record_type": record_type, "business_key": key, "member_token": member, "feed": "feed_a",
              "ingested_at_ms": 1_000, "record_id": key, **columns}
    return Row(*(values.get(f, [] if f in TEXT_ARRAYS_FIELDS else None) for f in ACCEPTED_FIELDS))


def claim(key: str, member: str | None, npi: str, charge: str = "100.00", frequency: str = "1") -> Any:
    line = ["1", "99213", "", "1", charge, DAY]
    return accepted("claim", key, member, billing_npi=npi, frequency_code=frequency, service_date_from=DAY,
                    service_lines=[line])


def records() -> list[Any]:
    """Member m1 billed by four providers in a day and twice for one service at two amounts; member m2 with
    eligibility and a void; and rows the detectors never see: a payment, a claim with no member token."""
    return [
        *(claim(f"c{i}", "tok-m1", f"100000000{i}") for i in range(4)),
        claim("c9", "tok-m1", "1000000000", charge="140.00"),
        accepted("eligibility", "e1", "tok-m2", coverage_start="2025-01-01", coverage_end="2025-12-31"),
        claim("c7", "tok-m2", "1000000007", frequency="8"),
        accepted("payment", "p1", "tok-m1"),
        claim("c8", None, "1000000008"),
    ]


def test_the_jvm_projects_facts_and_the_detectors_find_what_their_logic_finds(flink_process_env: None) -> None:
    from jobs.fraud_operator import DETECTORS_UID, FACT_FIELDS, FACTS_UID, fraud_detectors, fraud_facts
    from jobs.ingest_operator import ACCEPTED_TYPE
    from jobs.runtime import operator_ids
    from tests.flink import thread_mode_env
    from udfs.fraud import RULES_FILE, MemberDetector, MemberState, fact_of, load_rules

    rows = records()

    def built() -> tuple[Any, Any]:
        env = thread_mode_env()
        return env, fraud_facts(env.from_collection(rows, type_info=ACCEPTED_TYPE), ACCEPTED_TYPE)

    env, facts = built()
    with facts.execute_and_collect() as results:
        found = sorted(("fact", repr((keyed[0], tuple(keyed[1])))) for keyed in results)
    env, facts = built()
    signals = fraud_detectors(facts, ACCEPTED_TYPE, "", "t")
    graph = operator_ids(env)
    with signals.execute_and_collect() as results:
        found += sorted(("signal", f"{row.signal_id}|{row.rule}|{row.evidence_keys}") for row in results)

    # The facts: claims and eligibility with a member token, their columns in FACT_FIELDS order, keyed by the token.
    index = {f: ACCEPTED_FIELDS.index(f) for f in FACT_FIELDS}
    kept = [r for r in rows if r[index["record_type"]] in ("claim", "eligibility") and r[index["member_token"]]]
    assert len(kept) == 7
    want_facts = sorted(("fact", repr((r[index["member_token"]], tuple(r[index[f]] for f in FACT_FIELDS))))
                        for r in kept)
    assert [f for f in found if f[0] == "fact"] == want_facts

    # The signals: what MemberDetector decides over the same records, member by member, in their order.
    detector, states, want = MemberDetector(load_rules(RULES_FILE), "t"), {}, []
    for r in kept:
        columns = {f: r[index[f]] for f in FACT_FIELDS}
        fact = fact_of(columns["record_type"], columns, columns["business_key"], "feed_a", 1_000)
        assert fact is not None
        want += detector.on_fact(states.setdefault(fact.member, MemberState()), fact)[0]
    assert {s.rule for s in want} == {"member_many_providers", "duplicate_service_amounts"}
    assert [f for f in found if f[0] == "signal"] == sorted(
        ("signal", f"{s.signal_id}|{s.rule}|{','.join(s.evidence_keys)}") for s in want)
    # Each has its own uid (a savepoint maps state by uid; the detectors' is the Python operator's of before).
    assert graph["uids"][FACTS_UID] == FACTS_UID
    assert graph["uids"][DETECTORS_UID] == DETECTORS_UID
