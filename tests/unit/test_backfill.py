"""`medistream backfill`'s pure parts: times, range checks, the throttle, and the copy names the job reads back."""

from __future__ import annotations

import re

import pytest

from connectors.properties import ConfigError, duration_ms
from tools.backfill import BackfillError, Range, Throttle, check_range, iso, parse_time
from udfs.source import BACKFILL_PATH_PATTERN, ORIGIN_PATTERN, backfill_key, origin_header

NOW = parse_time("2026-12-04T12:00:00Z")
DAY = 86_400_000
FEEDS = {"hospital_a_claims", "insurer_b_payments"}


def test_times_need_a_zone_and_read_back_as_utc() -> None:
    assert iso(parse_time("2026-12-04T13:00:00+01:00")) == "2026-12-04T12:00:00Z"
    with pytest.raises(BackfillError, match="no time zone"):
        parse_time("2026-12-04T12:00:00")
    with pytest.raises(BackfillError, match="not an ISO 8601 time"):
        parse_time("yesterday")


@pytest.mark.parametrize(("rng", "message"), [
    (Range("nope", NOW - DAY, NOW - 1), "no feed 'nope'"),
    (Range("hospital_a_claims", NOW - 1, NOW - 1), "--from must be before --to"),
    (Range("hospital_a_claims", NOW - DAY, NOW + 60_000), "is in the future"),
    (Range("hospital_a_claims", NOW - 31 * DAY, NOW - DAY), "older than the job's dedup memory"),
])
def test_ranges_that_would_deliver_twice_or_name_nothing_are_refused(rng: Range, message: str) -> None:
    with pytest.raises(BackfillError, match=message):
        check_range(rng, NOW, 30 * DAY, FEEDS)


def test_a_range_within_the_dedup_memory_up_to_now_is_taken() -> None:
    check_range(Range("insurer_b_payments", NOW - 30 * DAY, NOW), NOW, 30 * DAY, FEEDS)


def test_the_throttle_spaces_units_evenly_and_never_bursts_after_a_pause() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    throttle = Throttle(4.0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(5):
        throttle.wait()
    assert clock[0] == pytest.approx(1.0) and slept == pytest.approx([0.25] * 4)
    clock[0] += 10  # a long pause (a slow read) earns no burst afterwards
    slept.clear()
    throttle.wait()
    throttle.wait()
    assert slept == pytest.approx([0.25])
    with pytest.raises(BackfillError, match="--rate must be positive"):
        Throttle(0)


def test_flink_durations_read_as_flink_reads_them() -> None:
    assert duration_ms("30 d") == 30 * DAY
    assert [duration_ms(t) for t in ("12h", "1 min", "2 s", "500 ms", "250")] == [43_200_000, 60_000, 2_000, 500, 250]
    with pytest.raises(ConfigError, match="not a Flink duration"):
        duration_ms("a month")


def test_a_copied_file_names_its_original_the_way_the_job_reads_it_back() -> None:
    """jobs/ingest.py applies BACKFILL_PATH_PATTERN in Flink SQL (Java regex); this pattern means the same in both."""
    key = backfill_key("feeds/", "hospital_a_claims", "20261204T120000Z-ab12cd", 1_764_849_600_123,
                       "hospital_a_claims/2026/12/04/batch-7.jsonl")
    path = f"s3://medistream-landing/{key}"
    match = re.fullmatch(BACKFILL_PATH_PATTERN, path)
    assert match is not None
    root, feed, modified, original = match.groups()
    assert root + original == "s3://medistream-landing/feeds/hospital_a_claims/2026/12/04/batch-7.jsonl"
    assert feed == "hospital_a_claims" and modified == "1764849600123" and original.startswith(f"{feed}/")
    # An ordinary landed file is not a copy.
    assert re.fullmatch(BACKFILL_PATH_PATTERN, "s3://medistream-landing/feeds/hospital_a_claims/x.jsonl") is None


def test_a_copied_message_names_its_original_partition_and_offset() -> None:
    match = re.fullmatch(ORIGIN_PATTERN, origin_header("raw.hospital_a_claims", 3, 1234))
    assert match is not None and match.groups() == ("raw.hospital_a_claims", "3", "1234")
    assert re.fullmatch(ORIGIN_PATTERN, "curated.snowflake/0@1") is None  # only raw topics are origins
