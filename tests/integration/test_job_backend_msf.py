"""`medistream jobs --target managed-flink` against the real Managed Flink stand-in and the stack's S3 (moto).

The stand-in (decision 0019) serves kinesisanalyticsv2 with the service's state machine; its in-memory
runner records which snapshot each start restored and which version it ran. Only the operator ids of a
zip are computed by an injected function (the real one builds the job graph with the Flink CLI): here a
zip names its ids in `operators.json`, so the ids of "the running version" come from the zip the back
end downloads from the application's code location.
"""

from __future__ import annotations

import json
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from connectors.audit import AuditLog, ensure_audit_table
from connectors.properties import LOCAL_PROPERTIES
from infra.local import moto_server
from infra.local.managed_flink import Delays, InMemoryRunner, ManagedFlinkHandle, StandinConfig, start_in_thread
from infra.local.process import free_loopback_port
from infra.local.settings import StackSettings
from tools import signing
from tools.job_backend_msf import ManagedFlinkBackend, MsfSettings
from tools.job_control import main, upgrade
from tools.job_interface import JobControlError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROLE = "arn:aws:iam::123456789012:role/medistream-msf"
OPERATORS = {"source", "ingest-operator", "dedup"}


def operator_ids_in(zip_path: Path, job: str) -> set[str]:
    """The injected operator-id function: what the zip says its job graph holds."""
    with zipfile.ZipFile(zip_path) as archive:
        return set(json.loads(archive.read("operators.json"))[job])


def make_zip(folder: Path, name: str, ingest_ids: set[str]) -> Path:
    """A zip naming its operator ids, signed with the local release key with stand-in SBOMs and provenance (the
    back end verifies every zip before it uploads or inspects it; test_release_signing covers the real ones)."""
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("operators.json", json.dumps({"ingest": sorted(ingest_ids), "partner_delivery": ["p"]}))
    for role, companion in signing.companion_paths(path).items():
        companion.write_text(json.dumps({"stand-in": role, "zip": name}) + "\n")
    signing.sign(path, signing.SigningSettings.for_environment("local"))
    return path


@dataclass
class Msf:
    """One test's stand-in, environment, clients and zips."""

    standin: ManagedFlinkHandle
    settings: MsfSettings
    backend: ManagedFlinkBackend
    client: Any  # kinesisanalyticsv2 on the stand-in
    s3: Any
    audit: AuditLog
    v1: Path
    folder: Path

    @property
    def runner(self) -> InMemoryRunner:
        runner = self.standin.runner
        assert isinstance(runner, InMemoryRunner)
        return runner

    def create(self, job: str = "ingest", snapshots: bool = True) -> str:
        """A READY application running v1 from the artifact bucket, as provisioning would leave it."""
        name, bucket = self.settings.application(job), self.settings.artifact_bucket
        for path in (self.v1, signing.envelope_path(self.v1), *signing.companion_paths(self.v1).values()):
            self.s3.upload_file(str(path), bucket, f"artifacts/{path.name}")
        code = {"CodeContentType": "ZIPFILE", "CodeContent": {"S3ContentLocation": {
            "BucketARN": f"arn:aws:s3:::{bucket}", "FileKey": f"artifacts/{self.v1.name}"}}}
        self.client.create_application(
            ApplicationName=name, RuntimeEnvironment="FLINK-2_2", ServiceExecutionRole=ROLE,
            ApplicationConfiguration={"ApplicationCodeConfiguration": code,
                                      "ApplicationSnapshotConfiguration": {"SnapshotsEnabled": snapshots}})
        return name

    def running(self, job: str = "ingest", snapshots: bool = True) -> str:
        name = self.create(job, snapshots)
        assert self.backend.start(job, None, None, False).state == "RUNNING"
        return name

    def detail(self, name: str) -> dict[str, Any]:
        return dict(self.client.describe_application(ApplicationName=name)["ApplicationDetail"])

    def snapshots(self, name: str) -> dict[str, str]:
        found = self.client.list_application_snapshots(ApplicationName=name)["SnapshotSummaries"]
        return {s["SnapshotName"]: s["SnapshotStatus"] for s in found}

    def calls(self, name: str, action: str) -> list[Any]:
        return [c for c in self.runner.actions(name) if c.action == action]


@pytest.fixture
def msf(stack: StackSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Msf]:
    run = uuid.uuid4().hex[:8]
    standin = start_in_thread(StandinConfig(port=free_loopback_port()), InMemoryRunner(Delays.fast()))
    groups = json.loads(LOCAL_PROPERTIES.read_text())
    for group in groups:
        if group["PropertyGroupId"] == "s3":
            group["PropertyMap"]["endpoint"] = stack.s3_endpoint()
    table = f"audit-msf-{run}"
    groups = [g for g in groups if g["PropertyGroupId"] != "audit"]
    groups.append({"PropertyGroupId": "audit", "PropertyMap": {"table": table}})
    properties = tmp_path / "application_properties.json"
    properties.write_text(json.dumps(groups))
    bucket = f"medistream-artifacts-t{run}"
    for name, value in {"MEDISTREAM_PROPERTIES": str(properties), "MEDISTREAM_MSF_ENDPOINT": standin.url,
                        "MEDISTREAM_ENVIRONMENT": f"t{run}", "MEDISTREAM_ARTIFACT_BUCKET": bucket}.items():
        monkeypatch.setenv(name, value)
    dynamodb, s3 = moto_server.client(stack, "dynamodb"), moto_server.client(stack, "s3")
    ensure_audit_table(dynamodb, table)
    settings = MsfSettings.from_env()
    backend = ManagedFlinkBackend(settings, ids_of=operator_ids_in, timeout_s=30)
    backend._ensure_bucket(bucket)  # what a start with a zip does on an endpoint override
    client = boto3.client("kinesisanalyticsv2", endpoint_url=standin.url, region_name=settings.region,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    try:
        yield Msf(standin, settings, backend, client, s3, AuditLog(dynamodb, table),
                  make_zip(tmp_path, f"medistream-1.0.0-t{run}.zip", OPERATORS), tmp_path)
    finally:
        standin.stop()
        for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)
        dynamodb.delete_table(TableName=table)


def test_settings_name_applications_by_job_and_environment(msf: Msf) -> None:
    assert msf.settings.endpoint == msf.standin.url and msf.settings.application("partner_delivery") == \
        f"medistream-partner_delivery-{msf.settings.environment}"


def test_status_of_missing_and_created_applications(msf: Msf) -> None:
    assert [(s.job, s.job_id, s.state) for s in msf.backend.list()] == [
        ("ingest", None, "NOT_DEPLOYED"), ("partner_delivery", None, "NOT_DEPLOYED")]
    name = msf.create()
    ready = msf.backend.status("ingest")
    assert (ready.job_id, ready.state, ready.uptime_s, ready.last_savepoint) == (name, "READY", None, None)
    assert ready.version == f"v1 artifacts/{msf.v1.name}"
    assert ready.last_checkpoint is None and ready.records == {} and ready.source_lag == {}  # CloudWatch: issue 21

    started = msf.backend.start("ingest", None, None, False)
    assert started.state == "RUNNING" and started.uptime_s is not None and started.uptime_s >= 0
    assert [(s.job, s.state) for s in msf.backend.list()] == [("ingest", "RUNNING"),
                                                              ("partner_delivery", "NOT_DEPLOYED")]


def test_savepoint_stop_and_start_from_a_snapshot_or_fresh(msf: Msf) -> None:
    name = msf.running()
    taken = msf.backend.savepoint("ingest")
    assert taken.startswith("medistream-ingest-") and msf.snapshots(name) == {taken: "READY"}
    assert msf.detail(name)["ApplicationStatus"] == "RUNNING"  # a savepoint does not stop the job
    assert msf.backend.status("ingest").last_savepoint == taken

    final = msf.backend.stop("ingest")
    assert final != taken and msf.snapshots(name)[final] == "READY"
    assert msf.detail(name)["ApplicationStatus"] == "READY"
    assert [(c.snapshot, c.force) for c in msf.calls(name, "stop")] == [(final, False)]  # snapshot first, not forced
    assert msf.backend.status("ingest").last_savepoint == final

    restored = msf.backend.start("ingest", None, taken, True)
    assert restored.state == "RUNNING" and restored.version == f"v1 artifacts/{msf.v1.name}"
    last = msf.calls(name, "start")[-1]
    assert (last.snapshot, last.allow_non_restored_state) == (taken, True)

    msf.backend.stop("ingest")
    msf.backend.start("ingest", None, None, False)
    last = msf.calls(name, "start")[-1]
    assert (last.snapshot, last.allow_non_restored_state) == (None, False)  # fresh: no state restored


def test_refusals_change_nothing(msf: Msf) -> None:
    name = msf.create()
    with pytest.raises(JobControlError, match="is READY, not RUNNING"):
        msf.backend.savepoint("ingest")
    with pytest.raises(JobControlError, match="is READY, not RUNNING"):
        msf.backend.stop("ingest")
    v2 = make_zip(msf.folder, "medistream-2.0.0.zip", OPERATORS)
    with pytest.raises(JobControlError, match="no READY snapshot 'nope'; nothing changed"):
        msf.backend.start("ingest", v2, "nope", False)
    assert msf.detail(name)["ApplicationVersionId"] == 1 and msf.calls(name, "start") == []
    assert "Contents" not in msf.s3.list_objects_v2(Bucket=msf.settings.artifact_bucket,
                                                    Prefix="artifacts/medistream-2")

    other = msf.running("partner_delivery", snapshots=False)
    with pytest.raises(JobControlError, match="snapshots disabled: a stop would keep none of its state"):
        msf.backend.stop("partner_delivery")
    assert msf.detail(other)["ApplicationStatus"] == "RUNNING" and msf.calls(other, "stop") == []
    with pytest.raises(JobControlError, match="snapshots disabled: a snapshot is refused; nothing changed"):
        msf.backend.savepoint("partner_delivery")
    with pytest.raises(JobControlError, match="is RUNNING, not READY"):
        msf.backend.start("partner_delivery", None, None, False)


def test_start_with_a_new_zip_updates_code_location_and_version(msf: Msf) -> None:
    name = msf.running()
    final = msf.backend.stop("ingest")
    v2 = make_zip(msf.folder, "medistream-2.0.0.zip", OPERATORS | {"enrich"})
    started = msf.backend.start("ingest", v2, final, False)
    assert started.state == "RUNNING" and started.version == "v2 artifacts/medistream-2.0.0.zip"
    s3_location = msf.detail(name)["ApplicationConfigurationDescription"]["ApplicationCodeConfigurationDescription"][
        "CodeContentDescription"]["S3ApplicationCodeLocationDescription"]
    assert s3_location["BucketARN"] == f"arn:aws:s3:::{msf.settings.artifact_bucket}"
    assert s3_location["FileKey"] == "artifacts/medistream-2.0.0.zip"
    uploaded = msf.s3.get_object(Bucket=msf.settings.artifact_bucket, Key="artifacts/medistream-2.0.0.zip")
    assert uploaded["Body"].read() == v2.read_bytes()
    last = msf.calls(name, "start")[-1]
    assert (last.version_id, last.snapshot) == (2, final)
    assert msf.backend.running_operator_ids("ingest") == OPERATORS | {"enrich"}  # read from the new code location


def test_upgrade_refused_when_the_new_version_lacks_a_running_operator(msf: Msf) -> None:
    name = msf.running()
    narrower = make_zip(msf.folder, "medistream-2.0.0.zip", OPERATORS - {"dedup"})
    with pytest.raises(JobControlError, match=r"1 operator\(s\) hold state .*: dedup\. Nothing was stopped"):
        upgrade(msf.backend, "ingest", narrower, False)
    detail = msf.detail(name)
    assert (detail["ApplicationStatus"], detail["ApplicationVersionId"]) == ("RUNNING", 1)
    assert msf.calls(name, "stop") == [] and len(msf.calls(name, "start")) == 1
    assert [c.action for c in msf.runner.actions(name)] == ["start", "snapshot"]  # only the probe snapshot


def test_upgrade_switches_version_restoring_the_stops_snapshot(msf: Msf) -> None:
    name = msf.running()
    wider = make_zip(msf.folder, "medistream-2.0.0.zip", OPERATORS | {"enrich"})
    result = upgrade(msf.backend, "ingest", wider, False)
    stop = msf.calls(name, "stop")[-1]
    assert result["savepoint"] == stop.snapshot and result["dropped_state"] == []
    assert result["checked_against"] in msf.snapshots(name) and result["checked_against"] != stop.snapshot
    assert result["status"]["state"] == "RUNNING" and result["status"]["version"] == "v2 artifacts/medistream-2.0.0.zip"
    last = msf.calls(name, "start")[-1]
    assert (last.version_id, last.snapshot, last.allow_non_restored_state) == (2, stop.snapshot, False)

    # Dropping state only when asked: v3 lacks `enrich`, and the operator allows it.
    v3 = make_zip(msf.folder, "medistream-3.0.0.zip", OPERATORS)
    result = upgrade(msf.backend, "ingest", v3, True)
    assert result["dropped_state"] == ["enrich"] and result["status"]["version"] == "v3 artifacts/medistream-3.0.0.zip"
    last = msf.calls(name, "start")[-1]
    assert (last.version_id, last.snapshot, last.allow_non_restored_state) == (3, result["savepoint"], True)


def jobs(capsys: pytest.CaptureFixture[str], *argv: str, role: str = "operator") -> tuple[int, Any]:
    capsys.readouterr()
    code = main(["--actor", "ops.kim", "--role", role, "--reason", "msf drill", "--target", "managed-flink", *argv])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else captured.err


def test_medistream_jobs_end_to_end_audited(msf: Msf, capsys: pytest.CaptureFixture[str]) -> None:
    name = msf.create()
    v2 = make_zip(msf.folder, "medistream-2.0.0.zip", OPERATORS)
    code, started = jobs(capsys, "start", "ingest", "--zip", str(v2), "--fresh")
    assert code == 0 and (started["state"], started["version"]) == ("RUNNING", "v2 artifacts/medistream-2.0.0.zip")
    code, status = jobs(capsys, "status", "ingest")
    assert code == 0 and (status["job_id"], status["state"]) == (name, "RUNNING")
    code, taken = jobs(capsys, "savepoint", "ingest")
    assert code == 0 and msf.snapshots(name)[taken["savepoint"]] == "READY"
    code, stopped = jobs(capsys, "stop", "ingest")
    assert code == 0 and msf.detail(name)["ApplicationStatus"] == "READY"
    code, restarted = jobs(capsys, "start", "ingest", "--savepoint", stopped["savepoint"])
    assert code == 0 and restarted["state"] == "RUNNING"
    assert msf.calls(name, "start")[-1].snapshot == stopped["savepoint"]
    code, listed = jobs(capsys, "list")
    assert code == 0 and listed["target"] == "managed-flink"
    assert [(j["job"], j["state"]) for j in listed["jobs"]] == [("ingest", "RUNNING"),
                                                                ("partner_delivery", "NOT_DEPLOYED")]

    code, err = jobs(capsys, "stop", "ingest", role="analyst")
    assert code == 2 and "role 'analyst' may not stop jobs" in err
    assert msf.detail(name)["ApplicationStatus"] == "RUNNING" and len(msf.calls(name, "stop")) == 1
    code, err = jobs(capsys, "start", "ingest", "--fresh")
    assert code == 2 and "is RUNNING, not READY; nothing changed" in err

    events = [(e["action"], e["decision"], e["role"], e["reason"]) for e in msf.audit.entries()]
    # The start with a zip verified its signature (decision 0031) after the operator's grant, before the upload.
    assert [e[:2] for e in events] == [
        ("job_start", "grant"), ("artifact_verify", "grant"), ("job_status", "grant"), ("job_savepoint", "grant"),
        ("job_stop", "grant"), ("job_start", "grant"), ("job_list", "grant"), ("job_stop", "deny"),
        ("job_start", "grant")]
    assert events[0][3] == "start from no savepoint on managed-flink (ingest): msf drill"
    assert events[1][2] == "deployer" and "medistream-2.0.0.zip" in events[1][3]
    assert events[5][3] == f"start from {stopped['savepoint']} on managed-flink (ingest): msf drill"
    assert msf.audit.verify().ok


@pytest.mark.parametrize("tampering", ["unsigned", "flipped byte"])
def test_start_with_a_tampered_zip_is_refused_before_upload_and_audited(msf: Msf, tampering: str) -> None:
    name = msf.create()
    before = msf.detail(name)["ApplicationVersionId"]
    v2 = make_zip(msf.folder, "medistream-2.0.0.zip", OPERATORS)
    if tampering == "unsigned":
        signing.envelope_path(v2).unlink()
    else:
        data = bytearray(v2.read_bytes())
        data[len(data) // 2] ^= 0x01
        v2.write_bytes(bytes(data))
    with pytest.raises(JobControlError, match="refused, nothing uploaded or changed"):
        msf.backend.start("ingest", v2, None, False)
    assert msf.detail(name)["ApplicationVersionId"] == before and msf.detail(name)["ApplicationStatus"] == "READY"
    keys = {o["Key"] for o in msf.s3.list_objects_v2(Bucket=msf.settings.artifact_bucket).get("Contents", [])}
    assert not any("2.0.0" in key for key in keys)
    verdicts = [(e["decision"], e["reason"]) for e in msf.audit.entries() if e["action"] == "artifact_verify"]
    assert verdicts[-1][0] == "deny" and "medistream-2.0.0.zip" in verdicts[-1][1]
