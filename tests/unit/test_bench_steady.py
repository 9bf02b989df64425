"""bench.resources.steady_window: a run's cost per record between two progress points, past start-up."""

from __future__ import annotations

import pytest

from bench.ingest_bench import job_to_bare_loop
from bench.resources import TreeUsage, steady_window


def usage_of(start_cpu_s: float, cpu_per_s: float, seconds: int, threads: bool = True) -> TreeUsage:
    """A sampler's series: `start_cpu_s` spent in the first second (start-up), then `cpu_per_s` each second."""
    usage = TreeUsage()
    for t in range(seconds + 1):
        cpu = 0.0 if t == 0 else start_cpu_s + cpu_per_s * (t - 1)
        usage.series.append((1000.0 + t, cpu))
        if threads and t % 3 == 0:
            usage.thread_series.append((1000.0 + t, {"task": cpu * 0.75, "C# CompilerThre": cpu * 0.25}))
    return usage


def test_the_window_leaves_start_up_out_and_reads_cpu_between_the_commits() -> None:
    # 40 CPU-seconds of start-up, then 1.5 cores for 100 s while 1,000 records/s are committed from t = 1001.
    usage = usage_of(40.0, 1.5, 101)
    commits = [(1001.0 + 5 * k, 5_000 * k) for k in range(1, 21)]  # a commit every 5 s, 5,000 records each
    window = steady_window(commits, usage, 100_000)
    assert window is not None
    assert (window["from_records"], window["to_records"], window["records"]) == (20_000, 90_000, 70_000)
    assert window["seconds"] == 70.0
    assert window["cpu_s"] == pytest.approx(105.0)
    assert window["records_per_cpu_s"] == pytest.approx(70_000 / 105.0)
    assert window["cpu_us_per_record"] == pytest.approx(1_500.0)
    assert window["records_per_s"] == pytest.approx(1_000.0)
    # The whole run's figure would have counted the start-up: 100,000 records over 40 + 150 CPU-seconds.
    assert usage.series[-1][1] == pytest.approx(190.0)
    assert window["jvm_threads_cpu_us_per_record"] == {"task": pytest.approx(1_125.0, abs=0.1),
                                                       "C# CompilerThre": pytest.approx(375.0, abs=0.1)}


def test_cpu_between_samples_is_interpolated() -> None:
    usage = TreeUsage(series=[(0.0, 0.0), (10.0, 10.0), (20.0, 30.0)])
    window = steady_window([(5.0, 200), (15.0, 800)], usage, 1_000)
    assert window is not None and window["cpu_s"] == pytest.approx(15.0)  # 5.0 at t=5, 20.0 at t=15


@pytest.mark.parametrize("commits", [
    [],  # nothing committed
    [(1.0, 1_000)],  # one commit of everything: no window
    [(1.0, 100), (2.0, 1_000)],  # the first commit past 20 % already holds everything
    [(1.0, 300), (2.0, 1_000)],  # one point bounds it, not two
])
def test_no_window_when_no_two_commits_bound_one(commits: list[tuple[float, int]]) -> None:
    assert steady_window(commits, usage_of(1.0, 1.0, 5), 1_000) is None


def test_the_job_against_the_bare_loop_per_size() -> None:
    runs = [
        {"size_kb": 4, "mode": "bare loop", "records_per_cpu_s": 3_000.0, "steady": {"records_per_cpu_s": 3_200.0}},
        {"size_kb": 4, "mode": "flink job", "records_per_cpu_s": 600.0, "steady": {"records_per_cpu_s": 800.0}},
        {"size_kb": 12, "mode": "bare loop", "records_per_cpu_s": 1_600.0, "steady": None},
        {"size_kb": 12, "mode": "flink job", "records_per_cpu_s": 400.0, "steady": {"records_per_cpu_s": 500.0}},
    ]
    assert job_to_bare_loop(runs) == {4: {"whole_run": 0.2, "steady": 0.25}, 12: {"whole_run": 0.25, "steady": None}}
