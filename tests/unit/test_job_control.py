"""`medistream jobs`: every command audited first and refused by role; an upgrade refused before anything stops.

The back end here is an in-test recorder of calls (the real ones run against the cluster and the Managed
Flink stand-in in tests/integration); what is tested is the command logic around it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools import cluster_status, deploy
from tools.cluster_config import ClusterSettings
from tools.job_backend_cluster import LocalClusterBackend, checkpoint_trouble
from tools.job_control import main, parser, run, upgrade
from tools.job_interface import JobControlError, JobStatus


class Recorder:
    """A back end that holds one job's savepoint contents and records what it was asked."""

    target = "local"

    def __init__(self, held: dict[str, int] | None, new_ids: set[str], running: set[str] | None = None) -> None:
        self.held, self.new_ids, self.running = held, new_ids, running
        self.calls: list[tuple[Any, ...]] = []

    def list(self) -> list[JobStatus]:
        return [JobStatus("ingest", "j1", "RUNNING")]

    def status(self, job: str) -> JobStatus:
        return JobStatus(job, "j1", "RUNNING")

    def savepoint(self, job: str) -> str:
        self.calls.append(("savepoint", job))
        return "s3://b/savepoint-1"

    def stop(self, job: str) -> str:
        self.calls.append(("stop", job))
        return "s3://b/savepoint-2"

    def start(self, job: str, zip_path: Path | None, savepoint: str | None, allow: bool) -> JobStatus:
        self.calls.append(("start", job, zip_path, savepoint, allow))
        return JobStatus(job, "j2", "RUNNING")

    def held_state(self, job: str, savepoint: str) -> dict[str, int] | None:
        return self.held

    def running_operator_ids(self, job: str) -> set[str] | None:
        return self.running

    def operator_ids(self, job: str, zip_path: Path) -> set[str]:
        return self.new_ids


class AuditRecorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def append(self, event: Any) -> None:
        self.events.append(event)


A, B, C = "a" * 32, "b" * 32, "c" * 32
NEW = Path("dist/medistream-2-py3.12.zip")


def test_an_upgrade_whose_graph_has_no_place_for_held_state_is_refused_before_anything_stops() -> None:
    backend = Recorder(held={A: 120, B: 40}, new_ids={A, C})
    with pytest.raises(JobControlError, match=rf"1 operator\(s\) hold state .*{B} \(40 bytes\).*Nothing was stopped"):
        upgrade(backend, "ingest", NEW, allow_non_restored_state=False)
    assert backend.calls == [("savepoint", "ingest")]  # the probe savepoint only: the job runs on


def test_an_upgrade_that_restores_everything_stops_then_starts_from_the_final_savepoint() -> None:
    backend = Recorder(held={A: 120}, new_ids={A, C})
    result = upgrade(backend, "ingest", NEW, allow_non_restored_state=False)
    assert backend.calls == [("savepoint", "ingest"), ("stop", "ingest"),
                             ("start", "ingest", NEW, "s3://b/savepoint-2", False)]
    assert result["dropped_state"] == [] and result["savepoint"] == "s3://b/savepoint-2"


def test_dropping_state_takes_the_flag_and_is_reported() -> None:
    backend = Recorder(held={A: 120, B: 40}, new_ids={A})
    result = upgrade(backend, "ingest", NEW, allow_non_restored_state=True)
    assert result["dropped_state"] == [B] and backend.calls[-1][-1] is True


def test_operators_listed_without_bytes_are_skipped_once_the_final_savepoint_confirms_it() -> None:
    """A stateless operator without a uid whose id moved (PyFlink's conversion map) holds 0 bytes: nothing to lose."""
    backend = Recorder(held={A: 120, B: 0}, new_ids={A, C})
    result = upgrade(backend, "ingest", NEW, allow_non_restored_state=False)
    assert result["dropped_state"] == [] and result["skipped_empty"] == [B]
    assert backend.calls[-1] == ("start", "ingest", NEW, "s3://b/savepoint-2", True)


def test_an_empty_operator_that_holds_state_at_the_final_savepoint_puts_the_running_version_back() -> None:
    class Growing(Recorder):
        def held_state(self, job: str, savepoint: str) -> dict[str, int] | None:
            return {A: 120, B: 0} if savepoint.endswith("-1") else {A: 130, B: 64}

    backend = Growing(held=None, new_ids={A, C})
    with pytest.raises(JobControlError, match=rf"{B} \(64 bytes\).*previous version was started again"):
        upgrade(backend, "ingest", NEW, allow_non_restored_state=False)
    assert backend.calls[-1] == ("start", "ingest", None, "s3://b/savepoint-2", False)


def test_without_a_readable_savepoint_the_running_versions_ids_decide() -> None:
    refused = Recorder(held=None, new_ids={A}, running={A, B})
    with pytest.raises(JobControlError, match="Nothing was stopped"):
        upgrade(refused, "ingest", NEW, allow_non_restored_state=False)
    unknown = Recorder(held=None, new_ids={A}, running=None)
    with pytest.raises(JobControlError, match="cannot tell"):
        upgrade(unknown, "ingest", NEW, allow_non_restored_state=False)


def test_every_command_is_audited_and_a_role_without_it_is_refused_and_audited() -> None:
    audit, backend = AuditRecorder(), Recorder(held={}, new_ids=set())
    args = parser().parse_args(["--actor", "dana", "--role", "analyst", "--reason", "weekly check", "stop", "ingest"])
    with pytest.raises(JobControlError, match="role 'analyst' may not stop"):
        run(args, backend, audit)
    assert backend.calls == []
    granted = parser().parse_args(["--actor", "olu", "--role", "operator", "--reason", "INC-42", "savepoint", "ingest"])
    assert run(granted, backend, audit) == {"job": "ingest", "savepoint": "s3://b/savepoint-1"}
    assert [(e.actor, e.role, e.action, e.decision) for e in audit.events] == [
        ("dana", "analyst", "job_stop", "deny"), ("olu", "operator", "job_savepoint", "grant")]
    assert "INC-42" in audit.events[1].reason and "(ingest)" in audit.events[1].reason


def test_start_never_restores_implicitly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--actor", "olu", "--role", "operator", "--reason", "x", "start", "ingest"])
    assert "needs --savepoint P or --fresh" in capsys.readouterr().err


# The REST API's checkpoint statistics (GET /jobs/:id/checkpoints), as Flink 2.2 shapes them.
FAILED = {"id": 12, "status": "FAILED", "trigger_timestamp": 99_000, "failure_timestamp": 100_000,
          "failure_message": "java.io.IOException: upload failed\nCaused by: java.net.ConnectException: "
                             "Connection refused"}
COMPLETED = {"id": 11, "status": "COMPLETED", "latest_ack_timestamp": 90_000, "external_path": "s3://b/chk-11"}


@pytest.mark.parametrize(("latest", "failing"), [
    ({"completed": COMPLETED, "failed": None}, False),
    ({"completed": {**COMPLETED, "id": 13}, "failed": FAILED}, False),  # completed since: healthy again
    ({"completed": COMPLETED, "failed": FAILED}, True),
    ({"completed": None, "failed": FAILED}, True),
    ({}, False),
])
def test_checkpoints_are_failing_when_the_newest_attempt_that_ended_failed(latest: dict[str, Any],
                                                                           failing: bool) -> None:
    trouble = checkpoint_trouble({"counts": {"failed": 3}, "latest": latest}, now_ms=108_000)
    assert (trouble is not None) is failing
    if failing:
        assert trouble is not None
        assert "#12 failed 8 s ago: java.net.ConnectException: Connection refused; 3 failed in all" in trouble


def test_stop_and_savepoint_are_refused_while_checkpoints_fail_and_nothing_is_asked_of_the_cluster(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    backend = LocalClusterBackend(ClusterSettings(home=tmp_path))
    monkeypatch.setattr(backend, "_job_id", lambda job: "j1")
    answers = {"/jobs/j1/checkpoints": {"counts": {"failed": 1}, "latest": {"completed": COMPLETED, "failed": FAILED}}}
    monkeypatch.setattr(cluster_status, "rest_get", lambda settings, path, timeout_s=5: answers[path])
    triggered: list[str] = []
    monkeypatch.setattr(deploy, "stop", lambda *a, **k: triggered.append("stop"))
    monkeypatch.setattr(deploy, "savepoint", lambda *a, **k: triggered.append("savepoint"))
    with pytest.raises(JobControlError, match=r"stop-with-savepoint of ingest refused: its checkpoints are failing "
                                              r".*the job runs on, unchanged"):
        backend.stop("ingest")
    with pytest.raises(JobControlError, match="the savepoint of ingest refused"):
        backend.savepoint("ingest")
    assert triggered == []


def test_list_shows_a_job_this_cluster_does_not_know_as_unknown_and_still_fails_without_a_cluster(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    backend = LocalClusterBackend(ClusterSettings(home=tmp_path))
    records = {"ingest": {"job_id": "a" * 32}, "partner_delivery": {"job_id": "b" * 32}}
    monkeypatch.setattr(backend, "_deployed", records.get)
    monkeypatch.setattr(backend, "status", lambda job: (_ for _ in ()).throw(JobControlError("gone"))
                        if job == "partner_delivery" else JobStatus(job, "a" * 32, "RUNNING"))
    answers: dict[str, object] = {"/jobs": {"jobs": []}}
    monkeypatch.setattr(cluster_status, "rest_get", lambda settings, path, timeout_s=5: answers.get(path))
    assert [(s.job, s.state) for s in backend.list()] == [("ingest", "RUNNING"), ("partner_delivery", "UNKNOWN")]
    answers.clear()  # the cluster does not answer
    with pytest.raises(JobControlError, match="does not answer /jobs"):
        backend.list()
