"""The fraud detectors' rules (udfs/fraud.py): each pattern, what must not fire, and order independence."""

from __future__ import annotations

import pickle
import random
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from udfs.fraud import (
    PROVIDERS_PER_MEMBER_DAY,
    RULES_FILE,
    SERVICE_AMOUNT_MISMATCH,
    Fact,
    FraudRules,
    FraudRulesError,
    Line,
    MemberDetector,
    MemberState,
    Rule,
    Signal,
    fact_of,
    load_rules,
    money,
    signal_values,
    state_from_plain,
    state_to_plain,
    window_start,
)

RULES = FraudRules((
    Rule("many", "providers_per_member_day", window_days=1, threshold=3),
    Rule("amounts", "service_amount_mismatch", threshold=2),
    Rule("outside", "service_outside_eligibility", grace_ms=2000),
), state_ttl_ms=86_400_000)


def claim(key: str, npi: str = "1000000004", day: str = "2025-05-01", member: str = "tok-m1", freq: str = "1",
          lines: tuple[tuple[str, str], ...] = (("99213", "100.00"),)) -> Fact:
    return Fact(member, "claim", key, "feed_a", 1_000, billing_npi=npi, frequency_code=freq, service_date=day,
                lines=tuple(Line(code, money(charge) or "", day) for code, charge in lines))


def coverage(start: str, end: str | None = None, member: str = "tok-m1", key: str = "e1") -> Fact:
    return Fact(member, "eligibility", key, "feed_e", 1_000, coverage_start=start, coverage_end=end)


def run(facts: list[Fact], rules: FraudRules = RULES) -> list[Signal]:
    """Every signal of `facts` in this order, the grace timer firing after the last fact (as in the job)."""
    detector, state, signals = MemberDetector(rules), MemberState(), []
    for fact in facts:
        found, _ = detector.on_fact(state, fact)
        signals += found
    return signals + detector.on_timer(state, facts[0].member if facts else "")


def by_rule(signals: list[Signal]) -> dict[str, int]:
    return {rule: sum(1 for s in signals if s.rule == rule) for rule in {s.rule for s in signals}}


def test_more_providers_than_the_threshold_in_one_day_fires_once() -> None:
    three = [claim(f"k{i}", npi=f"10000000{i}4") for i in range(3)]
    assert by_rule(run(three)) == {}
    signals = run([*three, claim("k3", npi="1000000304"), claim("k4", npi="1000000404")])
    assert by_rule(signals) == {"many": 1}
    (signal,) = signals
    assert signal.evidence_count == 4 and signal.threshold == 3 and signal.service_date == "2025-05-01"
    assert signal.evidence_keys == ("k0", "k1", "k2", "k3")


def test_providers_are_counted_per_window_per_member_and_voids_and_resends_add_nothing() -> None:
    days = [claim(f"k{i}", npi=f"10000000{i}4", day=f"2025-05-0{i + 1}") for i in range(4)]
    assert run(days) == []
    resends = [claim("k0", npi="1000000004")] * 5 + [claim("k1", npi="1000000104")] * 3
    voids = [claim(f"v{i}", npi=f"20000000{i}4", freq="8") for i in range(4)]
    assert by_rule(run([*resends, *voids])) == {}
    wide = FraudRules((Rule("many", "providers_per_member_day", window_days=7, threshold=3),), state_ttl_ms=1)
    assert by_rule(run(days, wide)) == {"many": 1}
    assert window_start("2025-05-04", 7) == window_start("2025-05-01", 7) == "2025-05-01"


def test_the_same_service_billed_by_two_claims_with_different_amounts_fires() -> None:
    first, second = claim("k1", lines=(("99213", "100.00"),)), claim("k2", lines=(("99213", "140.00"),))
    signals = run([first, second])
    assert by_rule(signals) == {"amounts": 1}
    assert signals[0].provider_npi == "1000000004" and signals[0].evidence_keys == ("k1", "k2")


@pytest.mark.parametrize("second", [
    claim("k1", lines=(("99213", "140.00"),)),  # a new version of the same claim (same business key)
    claim("k2", lines=(("99213", "100.0"),)),  # the same amount, written otherwise
    claim("k2", lines=(("99214", "140.00"),)),  # another procedure
    claim("k2", npi="1000000104", lines=(("99213", "140.00"),)),  # another provider
    claim("k2", day="2025-05-02", lines=(("99213", "140.00"),)),  # another date of service
    claim("k2", freq="7", lines=(("99213", "140.00"),)),  # a replacement claim re-bills its original
    claim("k2", member="tok-m2", lines=(("99213", "140.00"),)),  # another member (the job keys by member)
])
def test_what_is_not_a_second_bill_with_another_amount(second: Fact) -> None:
    first = claim("k1", lines=(("99213", "100.00"),))
    if second.member != first.member:
        assert run([first]) == run([second]) == []
        return
    assert by_rule(run([first, second])).get("amounts", 0) == 0


def test_a_claim_outside_every_coverage_span_fires_once_the_member_has_eligibility() -> None:
    inside, outside = claim("k1", day="2025-03-10"), claim("k2", day="2024-12-31")
    spans = [coverage("2025-01-01", "2025-12-31")]
    signals = run([*spans, inside, outside])
    assert by_rule(signals) == {"outside": 1} and signals[0].evidence_keys == ("k2",)
    # Claims first: they wait for the member's eligibility, then are decided against it.
    assert [s.signal_id for s in run([inside, outside, *spans])] == [s.signal_id for s in signals]
    # A second span covering the date: not a signal. Open coverage (no end) covers every later date.
    assert run([outside, coverage("2024-12-01", "2024-12-31", key="e2"), *spans]) == []
    assert run([coverage("2024-01-01", None), claim("k3", day="2026-01-01")]) == []


def test_without_any_eligibility_claims_stay_pending_and_are_decided_when_it_arrives() -> None:
    detector, state = MemberDetector(RULES), MemberState()
    signals, decide = detector.on_fact(state, claim("k1", day="2024-06-01"))
    assert signals == [] and not decide  # no spans: no timer either
    assert detector.on_timer(state, "tok-m1") == [] and "k1" in dict(state.pending_claims())  # nothing to decide yet
    signals, decide = detector.on_fact(state, coverage("2025-01-01"))
    assert signals == [] and decide
    assert by_rule(detector.on_timer(state, "tok-m1")) == {"outside": 1} and state.pending_claims() == []
    assert state.pending_count() == 0 and not state.pieces.keys() & state.removed
    # Decided once: a re-send of the claim adds no second signal; a covered claim is decided at once.
    assert detector.on_fact(state, claim("k1", day="2024-06-01"))[1]
    assert detector.on_timer(state, "tok-m1") == []
    assert detector.on_fact(state, claim("k9", day="2025-06-01")) == ([], False) and state.pending_claims() == []


def test_pending_claims_are_bounded_oldest_first() -> None:
    rules = FraudRules(RULES.rules, state_ttl_ms=1, max_pending=3)
    detector, state = MemberDetector(rules), MemberState()
    for i in range(5):
        detector.on_fact(state, claim(f"k{i}", npi=f"10000000{i}4", day=f"2024-06-0{i + 1}"))
    assert [key for key, _ in state.pending_claims()] == ["k2", "k3", "k4"] and state.pending_count() == 3


def test_signals_do_not_depend_on_the_order_records_arrive_in() -> None:
    rng = random.Random(7)
    facts = [claim(f"k{i}", npi=f"10000000{i % 6}4", day=f"2025-05-0{1 + i % 3}",
                   lines=(("99213", f"{100 + 10 * (i % 2)}.00"), ("J1100", "5.00"))) for i in range(24)]
    facts += [coverage("2025-05-02", "2025-05-02"), coverage("2025-05-03", None, key="e2")]
    facts += facts[:5]  # re-sends
    want = sorted(s.signal_id for s in run(facts))
    assert len(want) > 5
    for _ in range(20):
        rng.shuffle(facts)
        assert sorted(s.signal_id for s in run(facts)) == want


def test_state_is_builtins_only() -> None:
    detector, state = MemberDetector(RULES), MemberState()
    for fact in (claim("k1"), claim("k2", npi="1000000104", lines=(("99213", "12.50"),)), coverage("2025-01-01")):
        detector.on_fact(state, fact)
    plain, pieces = state_to_plain(state), state.changed_pieces()
    # The day's providers window, each provider's service day; the two claims pending (no span when they came) and
    # their order block.
    assert pieces == state.pieces and sorted(key[0] for key in pieces) == ["c", "c", "p", "q", "s", "s"]
    assert b"udfs" not in pickle.dumps(plain) + pickle.dumps(pieces)  # a savepoint names no class of ours
    kept = pickle.loads(pickle.dumps(pieces))  # noqa: S301 - our own bytes, as the state backend returns them
    restored = state_from_plain(pickle.loads(pickle.dumps(plain)), kept.get)  # noqa: S301 - likewise
    assert (restored.spans, restored.pending_claims(), restored.fired) == (state.spans, state.pending_claims(),
                                                                             state.fired)
    assert state_from_plain(None) == MemberState()


def test_a_record_reads_and_writes_only_the_pieces_it_adds_to_whatever_the_members_history() -> None:
    """As Flink keeps it: the member's own part in a value, the pieces in a map read through `load`. Claims on
    200 days of one provider: each next claim reads its window's and its service day's piece, never the rest."""
    detector, own, stored = MemberDetector(RULES), None, dict[str, Any]()
    covered = state_from_plain(None)
    detector.on_fact(covered, coverage("2024-01-01"))  # covered claims do not wait in the member's own part
    own = state_to_plain(covered)
    for day in range(200):
        loaded: list[str] = []
        state = state_from_plain(own, lambda key, loaded=loaded: loaded.append(key) or stored.get(key))
        detector.on_fact(state, claim(f"k{day}", day=(date(2024, 1, 1) + timedelta(days=day)).isoformat()))
        assert len(loaded) == 2 and state.changed == set(loaded)
        own = state_to_plain(state)
        stored.update(state.changed_pieces())
    assert len(stored) == 400 and len(pickle.dumps(own)) < 200


class Backend:
    """Pieces and the own part as Flink keeps them between records: pickled, read through `load`, written back."""

    def __init__(self) -> None:
        self.own: bytes | None = None
        self.pieces: dict[str, bytes] = {}
        self.loaded: list[str] = []

    def state(self) -> MemberState:
        self.loaded = []
        plain = None if self.own is None else pickle.loads(self.own)  # noqa: S301 - our own bytes

        def load(key: str) -> Any:
            self.loaded.append(key)
            found = self.pieces.get(key)
            return None if found is None else pickle.loads(found)  # noqa: S301 - likewise

        return state_from_plain(plain, load)

    def save(self, state: MemberState) -> None:
        self.own = pickle.dumps(state_to_plain(state))
        self.pieces.update({key: pickle.dumps(piece) for key, piece in state.changed_pieces().items()})
        for key in state.removed:
            self.pieces.pop(key, None)


def test_a_claims_cost_does_not_grow_with_its_members_pending_claims() -> None:
    """A member with no eligibility keeps every claim pending (decision 0060): each next claim reads its providers
    window, its service day, its own pending piece and one order block (two more when the oldest goes), and the own
    part stays small, from the first claim to the 300th."""
    detector, backend = MemberDetector(FraudRules(RULES.rules, 86_400_000, max_pending=256)), Backend()
    for n in range(300):
        state = backend.state()
        detector.on_fact(state, claim(f"k{n}", day=(date(2024, 1, 1) + timedelta(days=n)).isoformat()))
        assert len(backend.loaded) <= 6, (n, backend.loaded)
        backend.save(state)
        assert len(backend.own or b"") < 200
    state = backend.state()
    assert [key for key, _ in state.pending_claims()] == [f"k{n}" for n in range(44, 300)]
    assert sum(key.startswith("c\x1f") for key in backend.pieces) == 256  # the dropped claims' pieces deleted
    assert sum(key.startswith("q\x1f") for key in backend.pieces) == 9  # blocks 1 to 9 (0 emptied and deleted)


def test_a_resent_pending_claim_keeps_its_place_and_its_latest_values() -> None:
    detector, state = MemberDetector(RULES), MemberState()
    for key in ("k1", "k2", "k3"):
        detector.on_fact(state, claim(key, day="2024-06-01"))
    later = Fact("tok-m1", "claim", "k1", "feed_b", 2_000, billing_npi="1000000004", service_date="2024-06-02")
    detector.on_fact(state, later)
    assert state.pending_claims() == [("k1", ("2024-06-02", "feed_b", 2_000)), ("k2", ("2024-06-01", "feed_a", 1_000)),
                                      ("k3", ("2024-06-01", "feed_a", 1_000))]
    assert state.pending_count() == 3


def test_pending_pieces_that_expired_are_skipped_and_leave_the_count() -> None:
    """Each piece expires 30 days after its last write: an order block or a claim gone before its member's own part
    is skipped by the timer and by the oldest-first drop, never read as another claim."""
    rules = FraudRules(RULES.rules, 86_400_000, max_pending=40)
    detector, backend = MemberDetector(rules), Backend()
    for n in range(40):
        state = backend.state()
        detector.on_fact(state, claim(f"k{n}", day="2024-06-01"))
        backend.save(state)
    del backend.pieces["q\x1f0"]  # the first 32 claims' order, expired
    del backend.pieces["c\x1fk35"]  # one claim of the second block, expired
    state = backend.state()
    assert [key for key, _ in state.pending_claims()] == ["k32", "k33", "k34", "k36", "k37", "k38", "k39"]
    detector.on_fact(state, claim("k40", day="2024-06-01"))  # 41 counted: the expired block is dropped, not a claim
    backend.save(state)
    state = backend.state()
    assert [key for key, _ in state.pending_claims()][-2:] == ["k39", "k40"] and state.pending_count() == 9
    detector.on_fact(state, coverage("2025-01-01"))
    signals = detector.on_timer(state, "tok-m1")
    assert sorted(s.evidence_keys[0] for s in signals) == ["k32", "k33", "k34", "k36", "k37", "k38", "k39", "k40"]
    backend.save(state)
    assert not any(key[0] in "cq" for key in backend.pieces if key not in {f"c\x1fk{n}" for n in range(32)})


def test_a_claim_whose_pieces_outlived_its_decision_is_pending_again_when_it_comes_back() -> None:
    """Pieces left behind (a delete not applied, or a block this member no longer counts) are not pending claims: the
    claim sent again after its decision waits again, as a new claim."""
    detector, backend = MemberDetector(RULES), Backend()
    for fact in (claim("k1", day="2024-06-01"), coverage("2025-01-01")):
        state = backend.state()
        detector.on_fact(state, fact)
        backend.save(state)
    state = backend.state()
    assert by_rule(detector.on_timer(state, "tok-m1")) == {"outside": 1}
    backend.own = pickle.dumps(state_to_plain(state))  # the own part written, the deletes lost
    state = backend.state()
    assert detector.on_fact(state, claim("k1", day="2024-06-01"))[1]  # pending again: decide after the grace period
    assert [key for key, _ in state.pending_claims()] == ["k1"] and state.pending_count() == 1


def test_a_version_3_state_splits_its_pending_claims_into_pieces_in_their_order() -> None:
    """A member's own part as the job kept it before decision 0060 (pending claims inside it) restores: the claims
    keep their order, are written as pieces by the next record, and are decided as before."""
    pending = {"k7": ("2024-06-03", "feed_a", 7), "k2": ("2024-06-01", "feed_b", 2), "k5": ("2024-06-02", "feed_a", 5)}
    version_3 = (3, {("2025-01-01", None)}, pending, {"old-id"})
    state = state_from_plain(version_3)
    assert state.pending_claims() == list(pending.items()) and state.fired == {"old-id"}
    assert state.changed == set(state.pieces) and len(state.pieces) == 4  # three claims, one block
    assert state_to_plain(state) == (4, {("2025-01-01", None)}, {"old-id"}, 3, {0: 3})
    signals = MemberDetector(RULES).on_timer(state, "tok-m1")
    assert [s.evidence_keys for s in signals] == [("k7",), ("k2",), ("k5",)]


def test_a_version_2_state_splits_into_pieces_and_decides_as_before() -> None:
    """A member's state as the job kept it before decision 0044 (one value) restores: the next records give the
    signals they gave then, and no signal it had fired fires again."""
    rules = FraudRules((Rule("many", PROVIDERS_PER_MEMBER_DAY, threshold=2), Rule("amounts", SERVICE_AMOUNT_MISMATCH,
                                                                              threshold=2)), 86_400_000)
    first = [claim("k1", npi="1000000004"), claim("k2", npi="1000000104"), claim("k3", npi="1000000204")]
    fired_then = {s.signal_id for s in run(first, rules)}
    assert by_rule(run(first, rules)) == {"many": 1}
    version_2 = (2, ["k1", "k2", "k3"],
                 {("many", "2025-05-01"): {"1000000004": 0, "1000000104": 1, "1000000204": 2}},
                 {(npi, "99213", "2025-05-01"): {"100": [i]} for i, npi in enumerate(
                     ("1000000004", "1000000104", "1000000204"))}, set(), {}, fired_then)
    state, detector = state_from_plain(version_2), MemberDetector(rules)
    assert state.changed == set(state.pieces) and len(state.pieces) == 4  # all written by the next record
    later = [claim("k4", npi="1000000304"), claim("k5", npi="1000000004", lines=(("99213", "150.00"),))]
    signals = [s for fact in later for s in detector.on_fact(state, fact)[0]]
    assert by_rule(signals) == {"amounts": 1}  # "many" had fired for the day: not again
    assert sorted(s.signal_id for s in signals) == sorted(
        s.signal_id for s in run(first + later, rules) if s.signal_id not in fired_then)


@pytest.mark.parametrize("version", [1, 5, "3", 3.0, True])
def test_a_state_of_another_version_is_refused_with_its_version(version: object) -> None:
    with pytest.raises(ValueError, match=f"state version {version!r} is not one these detectors read"):
        state_from_plain((version, set(), {}, set()))


def test_facts_come_from_the_protected_columns() -> None:
    columns = {"member_token": "tok-m1", "billing_npi": "1000000004", "frequency_code": "1",
               "service_date_from": "2025-05-01",
               "service_lines": [["1", "99213", "", "1", "100.00", "2025-05-01"], ["2", "J1100", "", "1", None, None]]}
    fact = fact_of("claim", columns, "bk", "feed_a", 5)
    assert fact is not None and fact.lines == (Line("99213", money("100.0") or "", "2025-05-01"),)
    assert fact_of("payment", columns, "bk", "feed_a", 5) is None
    assert fact_of("claim", {**columns, "member_token": None}, "bk", "feed_a", 5) is None
    elig = fact_of("eligibility", {"member_token": "tok-m1", "coverage_start": "2025-01-01"}, "bk", "f", 5)
    assert elig is not None and (elig.coverage_start, elig.coverage_end) == ("2025-01-01", None)


def test_a_signal_row_names_tokens_and_digests_only() -> None:
    (signal,) = run([claim("k1", lines=(("99213", "100.00"),)), claim("k2", lines=(("99213", "140.00"),))])
    row = signal_values(signal, 1_748_000_000_000)
    assert row[1:5] == ("amounts", "tok-m1", "1000000004", "2025-05-01") and row[7] == "k1,k2"
    assert row[-1] == "2025-05-23" and len(row[0]) == 32


def test_the_shipped_rules_load_and_a_bad_file_is_named(tmp_path: Path) -> None:
    shipped = load_rules(RULES_FILE)
    assert {r.kind for r in shipped.rules} == {"providers_per_member_day", "service_amount_mismatch",
                                                "service_outside_eligibility"}
    bad = tmp_path / "rules.yaml"
    for text, message in (
        ("state_ttl_days: 30\nrules: [{name: a, kind: nope}]\n", "rules/0/kind"),
        ("state_ttl_days: 30\nrules: [{name: a, kind: providers_per_member_day, window_days: 1}]\n", "threshold"),
        ("state_ttl_days: 30\nrules: [{name: ab, kind: service_amount_mismatch, threshold: 2},"
         " {name: ab, kind: service_amount_mismatch, threshold: 3}]\n", "unique"),
        ("rules: []\n", "state_ttl_days"),
    ):
        bad.write_text(text)
        with pytest.raises(FraudRulesError, match=message) as err:
            load_rules(bad)
        assert str(bad) in str(err.value)


def test_the_ground_truth_matches_signals_by_pattern_and_flags_the_rest() -> None:
    from tools.readback import expected_signals, matched_signals

    patterns = {"many": [(frozenset({"k1", "k2", "k3", "k4"}), None, "2025-05-01")],
                "amounts": [(frozenset({"k5", "k6"}), "1000000004", "2025-05-02")]}
    want = expected_signals(patterns)
    assert sum(want.values()) == 2
    signals = [("s1", "many", None, "2025-05-01", ("k1", "k2", "k3", "k4")),
               ("s2", "amounts", "1000000004", "2025-05-02", ("k5", "k6")),
               ("s3", "amounts", "1000000004", "2025-05-03", ("k5", "k6")),  # another day: no pattern
               ("s4", "many", None, "2025-05-01", ("old1", "old2"))]  # another run's keys: not this run's
    held = matched_signals(patterns, signals, run_keys={"k1", "k2", "k3", "k4", "k5", "k6"})
    assert held - want == Counter({"amounts/unexpected/s3": 1}) and not want - held
    assert matched_signals(patterns, signals[:1] * 2, {"k1"}) - want  # the same pattern twice shows
