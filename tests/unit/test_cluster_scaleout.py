"""The scale-out bench's arithmetic and the cluster sampler's CPU accounting, without a cluster."""

from __future__ import annotations

import argparse
import time
from collections import Counter

import psutil
import pytest

from bench.cluster_scaleout_bench import iceberg_wanted, parse_list, ratios, table_rows
from tools.private_cluster import ClusterSampler, cpu_by_process
from tools.readback import SinkCounts, compare_sinks, inexact


def test_parallelism_lists_parse_and_refuse_zero() -> None:
    assert parse_list("1,2,4") == [1, 2, 4]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_list("0,2")


def test_a_process_born_inside_the_window_counts_from_zero_and_one_from_before_from_its_mark() -> None:
    mark = {(10, 1.0): 5.0, (11, 1.0): 2.0}
    last = {(10, 1.0): ("tm1", 7.5), (11, 1.0): ("tm2", 2.0), (12, 9.0): ("tm1", 1.25), (10, 8.0): ("tm2", 0.5)}
    # (10, 8.0) reuses PID 10 but started later: another process, counted from 0.
    assert cpu_by_process(last, mark) == {"tm1": 3.75, "tm2": 0.5}


def test_the_sampler_sees_cpu_spent_inside_its_window_and_the_peak_rss() -> None:
    me = psutil.Process()
    with ClusterSampler(lambda: {"tm1": me, "tm2": None}, interval_s=0.05) as sampler:
        mark = sampler.mark()
        until = time.process_time() + 0.2
        while time.process_time() < until:
            pass
        spent = sampler.cpu_since(mark)
    assert 0.15 <= spent["tm1"] < 5
    assert set(spent) == {"tm1"} and sampler.peak_rss_mib["tm1"] > 0


def _expected() -> dict[str, object]:
    return {"claims": Counter({"c1": 1, "c2": 1}), "archived": Counter({"c1": 1, "c2": 1, "p1": 1}),
            "dead_letters": Counter({"d1": 2}), "records": 6,
            "routed": {"iceberg:claim": Counter({"c1": 1, "c2": 1}), "iceberg:payment": Counter({"p1": 1}),
                       "snowflake": Counter({"c1": 1, "c2": 1, "p1": 1})}}


def test_each_iceberg_table_waits_for_its_routed_rows_and_the_dead_letters() -> None:
    assert iceberg_wanted(_expected()) == {"claims": 2, "payments": 1, "dead_letters": 2}


def test_a_duplicated_claim_or_a_dead_letter_missing_from_the_archive_makes_the_run_inexact() -> None:
    expected = _expected()
    sinks = SinkCounts(iceberg_claims=Counter(), archived=Counter(), dead_letters=Counter({"d1": 2}),
                       iceberg_claim_keys=Counter({"c1": 2, "c2": 1}),
                       archived_keys=Counter({"c1": 1, "c2": 1, "p1": 1}),
                       archived_feeds=Counter(), archive_objects=1, dead_letter_reasons={},
                       routed={"iceberg:claim": Counter({"c1": 1, "c2": 1}), "iceberg:payment": Counter({"p1": 1}),
                               "snowflake": Counter({"c1": 1, "c2": 1, "p1": 1})},
                       dead_letter_ids={"topic": Counter({"x": 1, "y": 1}), "archive": Counter({"x": 1}),
                                        "iceberg": Counter({"x": 1, "y": 1})})
    found = compare_sinks(expected, sinks)
    assert found["iceberg claims"] == {"expected": 2, "held": 3, "lost": 0, "duplicated": 1}
    assert set(inexact(found)) == {"iceberg claims", "dead letters (archive)"}


def _run(size: int, p: int, rate: float, per_cpu: float, exact: bool = True) -> dict[str, object]:
    return {"size_kb": size, "parallelism": p, "records": 2000, "wall_s": 2000 / rate, "records_per_s": rate,
            "cluster_cpu_s": 2000 / per_cpu, "records_per_cpu_s": per_cpu, "cluster_cores": 1.2,
            "machine_busy_cores": 1.6, "peak_rss_mib": {"jobmanager": 600, "tm1": 1100, "tm2": 900},
            "load_1m": {"max": 2.5}, "exact": exact}


def test_ratios_divide_each_parallelism_by_parallelism_one_of_the_same_size_and_skip_inexact_runs() -> None:
    runs = [_run(4, 1, 100.0, 50.0), _run(4, 2, 180.0, 45.0), _run(4, 4, 150.0, 30.0, exact=False),
            _run(1, 2, 300.0, 90.0)]
    assert ratios(runs) == {"4kb p2/p1": {"records_per_s": 1.8, "records_per_cpu_s": 0.9}}


def test_the_table_has_a_row_per_run_with_each_taskmanagers_peak() -> None:
    rows = table_rows([_run(4, 1, 100.0, 50.0)])
    assert len(rows) == 2 and len(rows[0]) == len(rows[1])
    assert rows[1][:2] == ("4 KB", "1") and "600 / 1,100 / 900" in rows[1]
