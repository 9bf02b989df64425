"""bench.latency_bench's per-slice and after-warm-up latency: start-up's backlog told apart from a rate too high."""

from __future__ import annotations

from bench.latency_bench import after_warmup, latency_by_slice


def test_slices_show_a_start_up_backlog_settling() -> None:
    # 100 records/s for 60 s from t = 1,000 s; the first 15 s wait 12 s to be visible, the rest 3 s.
    sent = {f"r{i}": 1_000_000 + i * 10 for i in range(6_000)}
    visible = {r: t + (12_000 if t < 1_015_000 else 3_000) for r, t in sent.items()}
    rows = latency_by_slice(sent, visible, 15)
    assert [(row["from_s"], row["to_s"], row["records"]) for row in rows] == [
        (0, 15, 1_500), (15, 30, 1_500), (30, 45, 1_500), (45, 60, 1_500)]
    assert [row["p95_s"] for row in rows] == [12.0, 3.0, 3.0, 3.0]
    steady = after_warmup(sent, 15)
    assert len(steady) == 4_500 and min(steady.values()) == 1_015_000


def test_records_not_yet_visible_are_left_out_and_no_warmup_keeps_every_record() -> None:
    sent = {"a": 0, "b": 20_000, "c": 40_000}
    rows = latency_by_slice(sent, {"a": 1_000, "c": 45_000}, 15)
    assert [(row["from_s"], row["records"]) for row in rows] == [(0, 1), (30, 1)]
    assert after_warmup(sent, 0) == sent
    assert latency_by_slice({}, {}, 15) == [] and after_warmup({}, 10) == {}
