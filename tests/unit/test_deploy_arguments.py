"""`medistream deploy` refuses savepoint arguments that do not name one deployed job, before reading the zip."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import deploy


def test_a_savepoint_with_two_jobs_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        deploy.main(["--target", "local", str(tmp_path / "m-py3.12.zip"), "--job", "ingest", "--job",
                     "partner_delivery", "--savepoint", "s3://bucket/savepoint-1"])
    assert stopped.value.code == 2
    assert "--savepoint restores one job" in capsys.readouterr().err


@pytest.mark.parametrize(("jobs", "savepoints", "message"), [
    (["ingest"], {"partner_delivery": "s3://b/sp"}, "a savepoint is given for 'partner_delivery'"),
    (["ingest"], {"nightly": "s3://b/sp"}, "no job 'nightly' in the zip"),
    (["nightly"], {}, "no job 'nightly' in the zip"),
])
def test_savepoints_must_belong_to_jobs_of_the_zip_being_deployed(
        tmp_path: Path, jobs: list[str], savepoints: dict[str, str], message: str) -> None:
    missing = tmp_path / "never-read-py3.12.zip"  # refused before the zip is opened
    with pytest.raises(deploy.DeployError, match=message):
        deploy.deploy(missing, jobs, savepoints=savepoints)
