"""`medistream batch`'s pure parts (no JVM, no stack): dates, request checks, `batch.path`, the batch job's config."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from connectors.properties import (
    LOCAL_PROPERTIES,
    ConfigError,
    batch_folder,
    batch_ingest_config,
    load_batch_path,
    load_ingest_config,
    read_property_groups,
)
from schemas.contracts import load_contracts
from tools import batch
from tools.batch import BatchError, check_request, parse_date

TODAY = date(2026, 12, 4)
CONTRACTS = load_contracts()


def test_dates_are_written_yyyy_mm_dd() -> None:
    assert parse_date("2026-12-03") == date(2026, 12, 3)
    for bad in ("2026-12-3", "2026-13-01", "2026-02-30", "yesterday", "2026-12-03T00:00:00Z", ""):
        with pytest.raises(BatchError, match="is not a date written YYYY-MM-DD"):
            parse_date(bad)


@pytest.mark.parametrize(("feed", "day", "message"), [
    ("nope", TODAY, "no feed 'nope'"),
    ("county_f_eligibility_csv", TODAY, "'county_f_eligibility_csv' is not a file feed (its doors: kafka)"),
    ("hospital_a_claims", TODAY, "is not a file feed (its doors: kafka, rest)"),
    ("hospital_d_claims", date(2026, 12, 5), "--date 2026-12-05 is in the future (today is 2026-12-04 UTC)"),
])
def test_requests_that_name_no_file_feed_or_a_day_to_come_are_refused(feed: str, day: date, message: str) -> None:
    with pytest.raises(BatchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_request(feed, day, TODAY, CONTRACTS)


def test_a_file_feed_today_or_before_is_taken() -> None:
    for day in (TODAY, date(2020, 1, 1)):
        check_request("hospital_d_claims", day, TODAY, CONTRACTS)


def _groups(batch_path: str | None) -> dict[str, dict[str, str]]:
    groups = {k: dict(v) for k, v in read_property_groups(LOCAL_PROPERTIES).items()}
    groups.pop("batch", None)
    if batch_path is not None:
        groups["batch"] = {"path": batch_path}
    return groups


def test_batch_path_defaults_beside_the_landing_prefix_and_never_inside_it() -> None:
    assert load_batch_path(_groups(None)) == "s3://medistream-landing/batch/"
    assert load_batch_path(_groups("file:///srv/batch/")) == "file:///srv/batch/"
    for bad, message in [("s3://medistream-landing/batch", "must be a folder URL ending in /"),
                         ("https://example.org/batch/", "must be a folder URL"), ("s3:///", "must be a folder URL"),
                         ("s3://medistream-landing/feeds/batch/", "must lie outside landing.path"),
                         ("s3://medistream-landing/", "must lie outside landing.path")]:
        with pytest.raises(ConfigError, match=message):
            load_batch_path(_groups(bad))


def test_the_batch_job_reads_one_date_folder_under_its_own_name_and_checkpoints() -> None:
    cfg = load_ingest_config(read_property_groups(LOCAL_PROPERTIES))
    job = batch_ingest_config(cfg, "s3://medistream-landing/batch/", "hospital_d_claims", "2026-12-03")
    assert job.landing.path == batch_folder("s3://medistream-landing/batch/", "hospital_d_claims", "2026-12-03") \
        == "s3://medistream-landing/batch/hospital_d_claims/2026-12-03/"
    assert job.runtime.job_name == "medistream-batch-hospital_d_claims" != cfg.runtime.job_name
    assert job.checkpoints.directory == cfg.checkpoints.directory + "-batch-hospital_d_claims"
    assert (job.kafka, job.iceberg, job.archive, job.curated) == (cfg.kafka, cfg.iceberg, cfg.archive, cfg.curated)


def test_a_bad_date_is_refused_in_one_line_before_anything_is_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    properties = tmp_path / "none.json"  # never read: the date is checked first
    code = batch.main(["--actor", "olu", "--role", "operator", "--reason", "x", "--feed", "hospital_d_claims",
                       "--date", "03/12/2026", "--properties", str(properties)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is not a date written YYYY-MM-DD" in err

