"""The metric plumbing without a JVM: batched Flink counters, door metrics, scrape-target files."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from connectors.metrics.doors import DoorMetrics
from connectors.metrics.flink_counters import N_ACCEPTED, N_DEAD, FlinkCounters
from connectors.metrics.targets import announce, prune


class FakeCounter:
    def __init__(self) -> None:
        self.value, self.calls = 0, 0

    def inc(self, n: int = 1) -> None:
        self.value, self.calls = self.value + n, self.calls + 1


class FakeGroup:
    """Flink's metric group as PyFlink exposes it: key-value subgroups, counters by name."""

    def __init__(self, path: tuple[str, ...] = ()) -> None:
        self.path, self.counters = path, {}

    def add_group(self, key: str, value: str) -> FakeGroup:
        return FakeGroupView(self, (*self.path, key, value))

    def counter(self, name: str) -> FakeCounter:
        return self.counters.setdefault((*self.path, name), FakeCounter())


class FakeGroupView(FakeGroup):
    def __init__(self, root: FakeGroup, path: tuple[str, ...]) -> None:
        self.root, self.path = root, path

    def add_group(self, key: str, value: str) -> FakeGroup:
        return FakeGroupView(self.root, (*self.path, key, value))

    def counter(self, name: str) -> FakeCounter:
        return self.root.counters.setdefault((*self.path, name), FakeCounter())


def test_counts_reach_flink_once_per_interval_as_differences() -> None:
    group = FakeGroup()
    counters = FlinkCounters(group, interval_ms=1000)
    row = counters.row("feed", "hospital_a_claims")
    for _ in range(500):
        row[N_ACCEPTED] += 1
    row[N_DEAD] += 2
    counters.inc("deadLetters", (("feed", "hospital_a_claims"), ("reason", "schema_invalid")), 2)
    counters.maybe_flush(10_000)
    accepted = group.counters[("feed", "hospital_a_claims", "accepted")]
    counters.row("feed", "other_feed")[N_ACCEPTED] += 1
    counters.maybe_flush(10_001)  # a new feed is flushed with its first unit, not a second later
    assert group.counters[("feed", "other_feed", "accepted")].value == 1
    assert (accepted.value, accepted.calls) == (500, 1)  # one call into the JVM for 500 records
    assert group.counters[("feed", "hospital_a_claims", "reason", "schema_invalid", "deadLetters")].value == 2
    row[N_ACCEPTED] += 7
    counters.maybe_flush(10_500)  # within the interval: nothing moves
    assert accepted.value == 500
    counters.set_total("kmsCalls", 4)
    counters.maybe_flush(11_100)
    assert (accepted.value, accepted.calls) == (507, 2)
    assert group.counters[("kmsCalls",)].value == 4
    counters.set_total("kmsCalls", 6)
    counters.flush()
    assert group.counters[("kmsCalls",)].value == 6
    # A row's counters exist from its first flush, zeros too: increase() then sees the first rise.
    assert group.counters[("feed", "hospital_a_claims", "corrections")].value == 0


def test_door_metrics_bound_their_labels_and_serve_on_loopback(tmp_path: Path, monkeypatch: object) -> None:
    monkeypatch.setenv("MEDISTREAM_HOME", str(tmp_path))  # type: ignore[attr-defined]
    metrics = DoorMetrics("ingest_api", ["hospital_a_claims"])
    metrics.moved("hospital_a_claims", 3, "produced")
    metrics.moved("../../etc/passwd", 1, "produced")  # a caller-chosen name never becomes a label
    metrics.publish("hospital_a_claims", {"landed": 2, "quarantined": {"checksum_mismatch": 1, "Bad Text!": 1}},
                    ("landed", "quarantined"), "landed")
    metrics.publish("hospital_a_claims", {"landed": 5, "quarantined": {"checksum_mismatch": 1, "Bad Text!": 1,
                                                                      "Other Text": 2}}, ("landed", "quarantined"),
                    "landed")
    port = metrics.serve()
    try:
        target = json.loads(next((tmp_path / "prometheus" / "targets").glob("ingest_api-*.json")).read_text())
        assert target == [{"targets": [f"127.0.0.1:{port}"], "labels": {"component": "ingest_api"}}]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        metrics.close()
    assert 'medistream_door_records_total{feed="hospital_a_claims",status="produced"} 3.0' in text
    assert 'medistream_door_records_total{feed="unknown",status="produced"} 1.0' in text
    assert 'medistream_door_records_total{feed="hospital_a_claims",status="landed"} 5.0' in text
    assert 'reason="quarantined_checksum_mismatch"} 1.0' in text
    assert 'reason="quarantined_other"} 3.0' in text  # codes that are not ours are summed, never labels
    assert "passwd" not in text and "_created" not in text
    assert not list((tmp_path / "prometheus" / "targets").glob("*.json"))  # a clean exit withdraws the target


def test_targets_of_dead_processes_are_pruned_after_a_while(tmp_path: Path) -> None:
    mine = announce("sftp_pull", 1234, folder=tmp_path)
    dead = tmp_path / "flink-999999999-19250.json"
    dead.write_text("[]")
    fresh_dead = tmp_path / "flink-999999998-19251.json"
    fresh_dead.write_text("[]")
    os.utime(dead, (0, 0))
    assert prune(tmp_path, keep_dead_s=600) == [dead]
    assert mine.exists() and fresh_dead.exists()  # alive, or dead too recently: its target-down alert still fires
