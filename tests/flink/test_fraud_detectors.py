"""The fraud detectors in the JVM (com.medistream.flink.FraudDetectors, MemberEvidence; decision 0055) against their
specification, udfs.fraud.MemberDetector, on the mini-cluster in thread mode as the ingest job runs them:

- generated facts (re-sends, voids, replacements, amounts written two ways, lines without a date, eligibility) give
  exactly the signals the specification gives;
- a member's state, version 2, 3 or 4, reads and writes as the pickled builtins the Python detectors keep;
- a savepoint of the Python operator restores into the JVM one, evidence, fired ids and pending grace periods
  included, and a savepoint of the JVM one restores into the Python operator (a rollback)."""

from __future__ import annotations

import json
import pickle  # nosec B403 # -- our own synthetic states, as the detectors' state holds them
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from jobs.fraud_operator import FACT_FIELDS

pytestmark = pytest.mark.flink

DAYS = ["2025-05-01", "2025-05-02", "2025-05-03", "2025-06-10"]


def fact_values(member: str, record_type: str, key: str, **columns: Any) -> list[Any]:
    """A fact row's values (FACT_FIELDS order) for these columns, every other one empty."""
    values = {"member_token": member, "record_type": record_type, "business_key": key, "feed": "feed_a",
              "ingested_at_ms": 1_000, "service_lines": [], **columns}
    return [values.get(f) for f in FACT_FIELDS]


def claim(member: str, key: str, npi: str, day: str, lines: list[list[str | None]], frequency: str = "1"
          ) -> list[Any]:
    return fact_values(member, "claim", key, billing_npi=npi, frequency_code=frequency, service_date_from=day,
                       service_lines=lines)


def eligibility(member: str, key: str, start: str, end: str | None) -> list[Any]:
    return fact_values(member, "eligibility", key, coverage_start=start, coverage_end=end)


def line(procedure: str, charge: str, day: str | None) -> list[str | None]:
    """A claim line's texts in CLAIM_LINE_FIELDS order."""
    return ["1", procedure, "", "1", charge, day]


def generated(seed: int, count: int) -> list[list[Any]]:
    """`count` facts of 12 members: few providers, procedures and days, so every rule fires and re-fires."""
    rng, facts = random.Random(seed), []  # nosec B311 # -- synthetic test data, not security
    for n in range(count):
        member = f"tok-m{rng.randrange(12)}"
        if facts and rng.random() < 0.08:
            facts.append(list(rng.choice(facts)))  # a re-send
        elif rng.random() < 0.12:
            start = rng.choice(["2025-01-01", "2025-05-02", "2025-06-01"])
            facts.append(eligibility(member, f"e{n}", start, rng.choice([None, "2025-05-31", "2025-12-31"])))
        else:
            day = rng.choice(DAYS)
            lines = [line(rng.choice(["99213", "99214", "", "J1100"]),
                          rng.choice(["100.00", "100.0", "140.00", "99.5", "12", "oops"]),
                          rng.choice([day, None, ""])) for _ in range(rng.randrange(4))]
            facts.append(claim(member, f"c{n}", f"10000000{rng.randrange(6):02d}", day, lines,
                               rng.choice(["1", "1", "1", "7", "8"])))
    return facts


def specified(facts: list[list[Any]], namespace: str, rules: Any = None) -> tuple[list[Any], dict[str, Any]]:
    """The signals udfs.fraud.MemberDetector gives for `facts` in order (timers not run), and its states."""
    from udfs.fraud import RULES_FILE, MemberDetector, MemberState, fact_of, load_rules

    detector, states, signals = MemberDetector(rules or load_rules(RULES_FILE), namespace), {}, []
    for values in facts:
        columns = dict(zip(FACT_FIELDS, values, strict=True))
        fact = fact_of(columns["record_type"], columns, columns["business_key"], columns["feed"],
                       columns["ingested_at_ms"])
        if fact is not None:
            signals += detector.on_fact(states.setdefault(fact.member, MemberState()), fact)[0]
    return signals, states


def signal_key(s: Any) -> tuple[Any, ...]:
    return (s.signal_id, s.rule, s.member, s.provider_npi, s.service_date, s.evidence_count, s.threshold,
            ",".join(s.evidence_keys), s.feed, s.ingested_at_ms)


def keyed_facts(env: Any, facts: list[list[Any]]) -> Any:
    """`facts` as the JVM projection hands them to the detectors: Row(member token, Row(FACT_FIELDS))."""
    from pyflink.common import Row, Types

    from jobs.fraud_operator import fact_type
    from jobs.ingest_operator import ACCEPTED_TYPE

    rows = [Row(values[0], Row(*values)) for values in facts]
    return env.from_collection(rows, type_info=Types.ROW([Types.STRING(), fact_type(ACCEPTED_TYPE)]))


def test_the_jvm_detectors_decide_what_their_specification_decides(flink_process_env: None) -> None:
    from jobs.fraud_operator import fraud_detectors
    from jobs.ingest_operator import ACCEPTED_TYPE
    from tests.flink import thread_mode_env

    facts = generated(seed=55, count=600)
    env = thread_mode_env()
    with fraud_detectors(keyed_facts(env, facts), ACCEPTED_TYPE, "", "t").execute_and_collect() as results:
        found = sorted((r.signal_id, r.rule, r.member_token, r.provider_npi, r.service_date, r.evidence_count,
                        r.threshold, r.evidence_keys, r.feed, r.ingested_at_ms) for r in results)
    want, _ = specified(facts, "t")
    # Grace-period signals need a timer, which a bounded run does not reach: the savepoint test below has them.
    assert {s.rule for s in want} == {"member_many_providers", "duplicate_service_amounts"}
    assert len(want) >= 20
    assert found == sorted(signal_key(s) for s in want)


def test_a_members_state_reads_and_writes_as_the_python_detectors_kept_it(flink_process_env: None) -> None:
    from py4j.protocol import Py4JJavaError
    from pyflink.java_gateway import get_gateway

    from tests.flink import thread_mode_env
    from udfs.fraud import state_from_plain, state_to_plain

    thread_mode_env()  # puts the dependencies jar (MemberEvidence) on the gateway's class path
    jvm = get_gateway().jvm
    evidence_class = jvm.com.medistream.flink.MemberEvidence
    # Version 2 (one value per member, before decision 0044): split into pieces, each marked to be written.
    v2 = (2, ["k1", "k2"], {("member_many_providers", "2025-05-01"): {"1000000001": 0, "1000000002": 1}},
          {("1000000001", "99213", "2025-05-01"): {"100": [0], "140": [1]}},
          {("2025-01-01", None), ("2025-03-01", "2025-04-30")},
          {"k9": ("2025-06-10", "feed_a", 1_733_000_000_123), "k8": ("2025-06-11", "feed_b", 5)}, {"old-id"})
    # Version 3 (before decision 0060): pending claims inside the own part in their arrival order (the oldest is
    # dropped first), split into pieces in that order, their sequence numbers saying it; and version 4 as written.
    _, states = specified(generated(seed=7, count=300), "t")
    v3s = [(3, s.spans, dict(s.pending_claims()), s.fired) for s in states.values()]
    assert sum(len(plain[2]) for plain in v3s) >= 20
    v4s = [state_to_plain(s) for s in states.values()]
    for plain in [v2, *v3s, *v4s]:
        java = evidence_class.stateOf(pickle.dumps(plain), None)
        python = state_from_plain(plain)
        assert pickle.loads(bytes(java.ownPickled())) == state_to_plain(python)  # noqa: S301 # nosec B301
        pieces = {str(k): pickle.loads(bytes(v)) for k, v in java.changedPickled().items()}  # noqa: S301 # nosec B301
        assert pieces == python.changed_pieces()
        assert set(java.removedKeys()) == python.removed == set()

    # A version neither writes (a newer release's savepoint) is refused, naming it, as Python refuses it.
    for version in (5, "3", 3.0):
        with pytest.raises(Py4JJavaError, match=f"state version {version} is not one these detectors read"):
            evidence_class.stateOf(pickle.dumps((version, set(), {}, set())), None)

    # A claim's business key in each of its lines' lists is written once, as Python's memo writes it: a state as the
    # JVM writes it stays near Python's size (without the memo, a 12 KB run's state grew about fivefold). Equal
    # lists stay two lists: an append to one must not change the other.
    lines = {("1000000001", f"99{p:03d}", "2025-05-01"): {f"{100 + p}.5": [0], f"{200 + p}.5": [0]} for p in range(25)}
    plain = (2, ["f" * 64], {}, lines, set(), {}, set())
    java = evidence_class.stateOf(pickle.dumps(plain), None)
    (written,) = java.changedPickled().values()
    (python,) = state_from_plain(plain).changed_pieces().values()
    assert len(bytes(written)) < 1.5 * len(pickle.dumps(python))
    billed = pickle.loads(bytes(written))[0]["99000"]  # noqa: S301 # nosec B301 -- written just above
    billed["100.5"].append("k2")
    assert billed["200.5"] == ["f" * 64]

# --- savepoints: the Python operator's into the JVM's, and back ----------------------------------------------


class FactLines:
    """A TCP server on 127.0.0.1 that hands one connection the fact lines it is given, until closed."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(120)
        self.port = self.server.getsockname()[1]
        self.lines: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.server, self.server.accept()[0] as conn:
            conn.sendall("".join(f"{line}\n" for line in self.lines).encode())
            self.done.wait(300)

    def close(self) -> None:
        self.done.set()
        self.thread.join(30)


def rules_file(tmp_path: Path, grace_seconds: int) -> Path:
    """The shipped rules with a grace period long enough to outlive a savepoint and a restart."""
    from udfs.fraud import RULES_FILE

    text = RULES_FILE.read_text().replace("grace_seconds: 2", f"grace_seconds: {grace_seconds}")
    assert f"grace_seconds: {grace_seconds}" in text
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def logged(path: Path) -> list[list[Any]]:
    return [json.loads(row) for row in path.read_text().splitlines()] if path.exists() else []


def wait_for(ready: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {seconds} s: {what}")
        time.sleep(0.5)


def savepoint(client: Any, directory: str) -> str:
    """A savepoint of the job in `directory`, its path (PyFlink 2.2's own JobClient call names no format: it fails;
    and a socket source fails a stop-with-savepoint when its socket closes, so the phase cancels the job after)."""
    from pyflink.java_gateway import get_gateway

    canonical = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    return str(client._j_job_client.triggerSavepoint(directory, canonical).get())


@contextmanager
def run_phase(python: bool, facts: list[list[Any]], rules: Path, log: Path, savepoints: str, restore: str | None,
              until: Callable[[], bool], what: str) -> Iterator[Callable[[], str]]:
    """Run the detectors (the Python operator or the JVM one) on `facts` from a socket, restored from `restore`,
    until `until()`; yield a function that takes a savepoint (its path); then cancel the job and stop the socket."""
    from pyflink.common import Row, Types
    from pyflink.datastream import DataStream

    from jobs.fraud_operator import DETECTORS_UID, SIGNAL_TYPE, fact_type, fraud_detectors
    from jobs.ingest_operator import ACCEPTED_TYPE
    from jobs.runtime import keyed_by_first_field
    from tests.flink import thread_mode_env
    from tests.flink.python_fraud_detector import FraudDetector

    lines = FactLines()
    lines.lines = [json.dumps(values) for values in facts]
    # One operator per uid, as in the job: PyFlink would otherwise fuse the Python detectors with the log's map.
    settings = {"python.operator-chaining.enabled": "false"}
    if restore:
        settings["execution.state-recovery.path"] = restore
    env = thread_mode_env(settings)
    source = env._j_stream_execution_environment.socketTextStream("127.0.0.1", lines.port).uid("fact-lines")
    keyed_type = Types.ROW([Types.STRING(), fact_type(ACCEPTED_TYPE)])
    facts_in = (DataStream(source)
                .map(lambda text: Row((v := json.loads(text))[0], Row(*v)), output_type=keyed_type).uid("fact-rows"))
    if python:
        signals = (keyed_by_first_field(facts_in, Types.STRING(), fact_type(ACCEPTED_TYPE))
                   .process(FraudDetector(str(rules), "t"), output_type=SIGNAL_TYPE)
                   .uid(DETECTORS_UID).name(DETECTORS_UID))
    else:
        signals = fraud_detectors(facts_in, ACCEPTED_TYPE, str(rules), "t")
    where = str(log)

    def append(row: Any) -> Any:
        with open(where, "a") as out:
            out.write(json.dumps([row.signal_id, row.rule, row.member_token, row.evidence_keys]) + "\n")
        return row

    from pyflink.java_gateway import get_gateway

    logged_signals = signals.map(append, output_type=SIGNAL_TYPE).uid("signal-log")
    logged_signals._j_data_stream.sinkTo(
        get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink()).uid("discard")
    client = env.execute_async("fraud-detectors-savepoint")
    try:
        wait_for(until, 180, what)
        yield lambda: savepoint(client, savepoints)
    finally:
        # Cancelled before its socket closes: a socket source that reaches its end finishes the job, and the
        # mini-cluster with it.
        if not client.get_job_status().result().is_globally_terminal_state():
            client.cancel().result()
        lines.close()


def test_savepoints_move_between_the_python_and_the_jvm_detectors(flink_process_env: None, tmp_path: Path) -> None:
    from udfs.fraud import load_rules

    rules, log, savepoints = rules_file(tmp_path, 30), tmp_path / "signals.jsonl", (tmp_path / "savepoints").as_uri()
    day, line_a = "2025-05-01", [line("99213", "100.00", "2025-05-01")]
    phase1 = [
        *(claim("tok-a", f"a{n}", f"100000000{n}", day, line_a) for n in range(3)),  # 3 providers: none yet
        claim("tok-c", "c1", "1000000001", day, line_a),  # one amount for the service
        eligibility("tok-d", "d0", "2025-01-01", "2025-03-31"),
        claim("tok-d", "d1", "1000000001", day, line_a),  # outside coverage: waits 30 s for more spans
        *(claim("tok-b", f"b{n}", f"100000000{n}", day, line_a) for n in range(4)),  # 4 providers: fires now
    ]
    phase2 = [
        claim("tok-a", "a3", "1000000003", day, line_a),  # a 4th provider: fires with the restored three
        claim("tok-b", "b4", "1000000004", day, line_a),  # a 5th: its signal was fired before the savepoint
        claim("tok-c", "c2", "1000000001", day, [line("99213", "140.00", day)]),  # a second amount: fires
        *(claim("tok-g", f"g{n}", f"100000000{n}", day, line_a) for n in range(3)),
    ]
    phase3 = [
        claim("tok-g", "g3", "1000000003", day, line_a),  # the 4th, on the three the JVM detectors wrote
        claim("tok-a", "a4", "1000000004", day, line_a),  # fired by the JVM detectors: not again
    ]
    every = [*phase1, *phase2, *phase3]
    spec, states = specified(every, "t", load_rules(rules))
    from udfs.fraud import MemberDetector

    timed = MemberDetector(load_rules(rules), "t").on_timer(states["tok-d"], "tok-d")
    want = {s.signal_id: s for s in [*spec, *timed]}
    ids = {m: {s.signal_id for s in want.values() if s.member == m} for m in ("tok-a", "tok-b", "tok-c", "tok-d",
                                                                             "tok-g")}
    assert all(len(found) == 1 for found in ids.values()) and len(want) == 5

    def seen(*members: str) -> Callable[[], bool]:
        return lambda: {row[0] for row in logged(log)} >= set().union(*(ids[m] for m in members))

    with run_phase(True, phase1, rules, log, savepoints, None, seen("tok-b"), "the Python operator's signal") as stop:
        first = stop()
    assert {row[0] for row in logged(log)} == ids["tok-b"]  # the grace period is still running

    with run_phase(False, phase2, rules, log, savepoints, first, seen("tok-a", "tok-c", "tok-d"),
                   "the JVM detectors' signals on the restored evidence and timer") as stop:
        second = stop()

    with run_phase(True, phase3, rules, log, savepoints, second, seen("tok-g"), "the Python operator on the JVM's"):
        time.sleep(2)  # the last fact (tok-a again) has had time to fire, were its id not restored

    rows = logged(log)
    assert sorted(row[0] for row in rows) == sorted(want)  # each signal once: none lost, none fired twice
    for signal_id, rule, member, evidence in rows:
        s = want[signal_id]
        assert (rule, member, evidence) == (s.rule, s.member, ",".join(s.evidence_keys))
