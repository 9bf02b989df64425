"""Chaos, short form: ten SIGKILLs of the ingest job and the Snowflake loader and two stack freezes
(broker, S3 API) while records flow; every sink must hold every record exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.checks.chaos import ChaosPlan, run_chaos

pytestmark = [pytest.mark.integration, pytest.mark.kill, pytest.mark.chaos]


def test_kills_and_outages_lose_and_duplicate_nothing_in_any_sink(stack: object, tmp_path: Path) -> None:
    report = run_chaos(ChaosPlan(records=3_000, kills=10, outages=2, seed=91), tmp_path)
    print(report.table())
    assert report.kills.total() == 10 and report.kills["ingest"] >= 3 and report.kills["loader"] >= 3
    assert report.outages == {"kafka": 1, "s3": 1}
    expected_sinks = {"iceberg:claim", "iceberg:payment", "iceberg:eligibility", "snowflake",
                      "operational:claim", "operational:payment", "operational:eligibility",
                      "partner:clearwater_health", "archive", "snowflake channel (emulator)", "dead letters (topic)",
                      "dead letters (archive)", "dead letters (iceberg)"}
    assert set(report.sinks) == expected_sinks
    assert all(report.sinks[s]["expected"] > 0 for s in expected_sinks)
    failed = {name: s for name, s in report.sinks.items() if s["lost"] or s["duplicated"]}
    assert failed == {}, report.table()
