"""The Managed Flink stand-in through an unmodified boto3 client on loopback: every action, the state
machine's refusals, optimistic locking, snapshot-on-stop, restore types and the errors botocore raises."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.local.managed_flink import (
    AppView,
    Delays,
    InMemoryRunner,
    ManagedFlinkHandle,
    SnapshotRef,
    StandinConfig,
    start_in_thread,
)
from infra.local.process import free_loopback_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROLE = "arn:aws:iam::123456789012:role/medistream-msf"
CODE = {"CodeContentType": "ZIPFILE",
        "CodeContent": {"S3ContentLocation": {"BucketARN": "arn:aws:s3:::medistream-code", "FileKey": "ingest-1.zip"}}}
# Slow enough that every transitional status is seen by the next request, fast enough for a test.
DELAYS = Delays(start_s=0.3, stop_s=0.3, force_stop_s=0.1, snapshot_s=0.3, delete_snapshot_s=0.1)


@pytest.fixture
def standin() -> Iterator[ManagedFlinkHandle]:
    handle = start_in_thread(StandinConfig(port=free_loopback_port(), max_snapshots=3), InMemoryRunner(DELAYS))
    yield handle
    handle.stop()


def make_client(url: str, **config: Any) -> Any:
    return boto3.client("kinesisanalyticsv2", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(retries={"max_attempts": 1}, **config))


@pytest.fixture
def client(standin: ManagedFlinkHandle) -> Any:
    return make_client(standin.url)


def create(client: Any, name: str = "ingest", snapshots: bool = True, **config: Any) -> dict[str, Any]:
    app_config = {"ApplicationCodeConfiguration": CODE,
                  "ApplicationSnapshotConfiguration": {"SnapshotsEnabled": snapshots}, **config}
    answer = client.create_application(ApplicationName=name, RuntimeEnvironment="FLINK-2_2",
                                       ServiceExecutionRole=ROLE, ApplicationConfiguration=app_config)
    return dict(answer["ApplicationDetail"])


def detail(client: Any, name: str = "ingest") -> dict[str, Any]:
    return client.describe_application(ApplicationName=name)["ApplicationDetail"]


def status(client: Any, name: str = "ingest") -> str:
    return str(detail(client, name)["ApplicationStatus"])


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def wait_status(client: Any, want: str, name: str = "ingest") -> None:
    wait_until(lambda: status(client, name) == want, f"{name} {want}")


def snapshots(client: Any, name: str = "ingest") -> dict[str, dict[str, Any]]:
    return {s["SnapshotName"]: s for s in client.list_application_snapshots(ApplicationName=name)["SnapshotSummaries"]}


def wait_snapshot(client: Any, snap: str, want: str = "READY") -> None:
    wait_until(lambda: snapshots(client).get(snap, {}).get("SnapshotStatus") == want, f"{snap} {want}")


def running(client: Any, name: str = "ingest", snapshots_on: bool = True) -> None:
    create(client, name, snapshots_on)
    client.start_application(ApplicationName=name)
    wait_status(client, "RUNNING", name)


def restore_of_last_start(standin: ManagedFlinkHandle, name: str = "ingest") -> str | None:
    runner = standin.runner
    assert isinstance(runner, InMemoryRunner)
    return [c for c in runner.actions(name) if c.action == "start"][-1].snapshot


def test_lifecycle_statuses_snapshot_on_stop_and_restore_from_latest(client: Any, standin: ManagedFlinkHandle) -> None:
    created = create(client)
    assert (created["ApplicationStatus"], created["ApplicationVersionId"]) == ("READY", 1)
    assert created["RuntimeEnvironment"] == "FLINK-2_2" and created["ApplicationARN"].endswith(":application/ingest")
    assert "OperationId" in client.start_application(ApplicationName="ingest")
    assert status(client) == "STARTING"
    wait_status(client, "RUNNING")
    assert restore_of_last_start(standin) is None  # no snapshot yet: starts without state

    client.create_application_snapshot(ApplicationName="ingest", SnapshotName="before-upgrade")
    assert snapshots(client)["before-upgrade"]["SnapshotStatus"] == "CREATING"
    wait_snapshot(client, "before-upgrade")
    client.stop_application(ApplicationName="ingest")
    assert status(client) == "STOPPING"
    wait_status(client, "READY")
    auto = [n for n in snapshots(client) if n != "before-upgrade"]
    assert len(auto) == 1 and snapshots(client)[auto[0]]["SnapshotStatus"] == "READY"  # a stop takes a snapshot

    client.start_application(ApplicationName="ingest")  # default restore type: the latest snapshot
    wait_status(client, "RUNNING")
    assert restore_of_last_start(standin) == auto[0]
    assert detail(client)["ApplicationVersionId"] == 1  # start and stop are not versions


def test_restore_types_and_allow_non_restored_state(client: Any, standin: ManagedFlinkHandle) -> None:
    running(client)
    client.create_application_snapshot(ApplicationName="ingest", SnapshotName="s1")
    wait_snapshot(client, "s1")
    client.stop_application(ApplicationName="ingest", Force=True)
    wait_status(client, "READY")

    with pytest.raises(client.exceptions.ResourceNotFoundException, match="Snapshot gone"):
        client.start_application(ApplicationName="ingest", RunConfiguration={"ApplicationRestoreConfiguration": {
            "ApplicationRestoreType": "RESTORE_FROM_CUSTOM_SNAPSHOT", "SnapshotName": "gone"}})
    assert status(client) == "READY"
    with pytest.raises(client.exceptions.InvalidArgumentException, match="needs a SnapshotName"):
        client.start_application(ApplicationName="ingest", RunConfiguration={"ApplicationRestoreConfiguration": {
            "ApplicationRestoreType": "RESTORE_FROM_CUSTOM_SNAPSHOT"}})

    client.start_application(ApplicationName="ingest", RunConfiguration={
        "ApplicationRestoreConfiguration": {"ApplicationRestoreType": "RESTORE_FROM_CUSTOM_SNAPSHOT",
                                            "SnapshotName": "s1"},
        "FlinkRunConfiguration": {"AllowNonRestoredState": True}})
    wait_status(client, "RUNNING")
    runner = standin.runner
    assert isinstance(runner, InMemoryRunner)
    last = [c for c in runner.actions("ingest") if c.action == "start"][-1]
    assert (last.snapshot, last.allow_non_restored_state) == ("s1", True)
    run = detail(client)["ApplicationConfigurationDescription"]["RunConfigurationDescription"]
    assert run["ApplicationRestoreConfigurationDescription"]["SnapshotName"] == "s1"
    assert run["FlinkRunConfigurationDescription"]["AllowNonRestoredState"] is True

    client.stop_application(ApplicationName="ingest", Force=True)
    wait_status(client, "READY")
    client.start_application(ApplicationName="ingest", RunConfiguration={
        "ApplicationRestoreConfiguration": {"ApplicationRestoreType": "SKIP_RESTORE_FROM_SNAPSHOT"}})
    wait_status(client, "RUNNING")
    assert restore_of_last_start(standin) is None


def test_each_status_refuses_what_the_service_refuses(client: Any, standin: ManagedFlinkHandle) -> None:
    create(client)
    with pytest.raises(client.exceptions.ResourceInUseException, match="READY status"):
        client.stop_application(ApplicationName="ingest")
    with pytest.raises(client.exceptions.ResourceInUseException):
        client.stop_application(ApplicationName="ingest", Force=True)
    with pytest.raises(client.exceptions.ResourceInUseException):
        client.create_application_snapshot(ApplicationName="ingest", SnapshotName="s")
    client.start_application(ApplicationName="ingest")
    for refused in (lambda: client.start_application(ApplicationName="ingest"),
                    lambda: client.stop_application(ApplicationName="ingest"),
                    lambda: client.update_application(ApplicationName="ingest", CurrentApplicationVersionId=1),
                    lambda: client.delete_application(ApplicationName="ingest",
                                                      CreateTimestamp=detail(client)["CreateTimestamp"])):
        with pytest.raises(client.exceptions.ResourceInUseException, match="STARTING status"):
            refused()
    client.stop_application(ApplicationName="ingest", Force=True)  # a forced stop is taken while STARTING
    assert status(client) == "FORCE_STOPPING"
    wait_status(client, "READY")
    time.sleep(DELAYS.start_s)  # the cancelled start must not come back and flip the status to RUNNING
    assert status(client) == "READY" and snapshots(client) == {}  # a forced stop takes no snapshot
    runner = standin.runner
    assert isinstance(runner, InMemoryRunner)
    assert [(c.action, c.force) for c in runner.actions("ingest")] == [("start", False), ("stop", True)]

    client.start_application(ApplicationName="ingest")
    wait_status(client, "RUNNING")
    with pytest.raises(client.exceptions.ResourceInUseException, match="RUNNING status"):
        client.start_application(ApplicationName="ingest")
    client.stop_application(ApplicationName="ingest")
    with pytest.raises(client.exceptions.ResourceInUseException, match="STOPPING status"):
        client.stop_application(ApplicationName="ingest")
    client.stop_application(ApplicationName="ingest", Force=True)  # a stuck stop can be forced
    wait_status(client, "READY")
    assert [s["SnapshotStatus"] for s in snapshots(client).values()] == ["FAILED"]  # its snapshot never completed


def test_snapshot_rules(client: Any, standin: ManagedFlinkHandle) -> None:
    running(client, "nosnap", snapshots_on=False)
    with pytest.raises(client.exceptions.InvalidApplicationConfigurationException, match="disabled"):
        client.create_application_snapshot(ApplicationName="nosnap", SnapshotName="s")
    client.stop_application(ApplicationName="nosnap")
    wait_status(client, "READY", "nosnap")
    assert snapshots(client, "nosnap") == {}  # snapshots disabled: a stop takes none

    running(client)
    client.create_application_snapshot(ApplicationName="ingest", SnapshotName="s1")
    with pytest.raises(client.exceptions.ResourceInUseException, match="already taking"):
        client.create_application_snapshot(ApplicationName="ingest", SnapshotName="s2")
    with pytest.raises(client.exceptions.ResourceInUseException, match="CREATING"):
        created = snapshots(client)["s1"]["SnapshotCreationTimestamp"]
        client.delete_application_snapshot(ApplicationName="ingest", SnapshotName="s1",
                                           SnapshotCreationTimestamp=created)
    wait_snapshot(client, "s1")
    with pytest.raises(client.exceptions.ResourceInUseException, match="already exists"):
        client.create_application_snapshot(ApplicationName="ingest", SnapshotName="s1")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_application_snapshot(ApplicationName="ingest", SnapshotName="nope")
    details = client.describe_application_snapshot(ApplicationName="ingest", SnapshotName="s1")["SnapshotDetails"]
    assert (details["SnapshotStatus"], details["ApplicationVersionId"], details["RuntimeEnvironment"]) == (
        "READY", 1, "FLINK-2_2")

    with pytest.raises(client.exceptions.InvalidArgumentException, match="creation time"):
        earlier = details["SnapshotCreationTimestamp"].timestamp() - 5
        client.delete_application_snapshot(ApplicationName="ingest", SnapshotName="s1",
                                           SnapshotCreationTimestamp=earlier)
    client.delete_application_snapshot(ApplicationName="ingest", SnapshotName="s1",
                                       SnapshotCreationTimestamp=details["SnapshotCreationTimestamp"])
    assert snapshots(client)["s1"]["SnapshotStatus"] == "DELETING"
    wait_until(lambda: "s1" not in snapshots(client), "s1 deleted")

    for name in ("a", "b", "c"):  # the quota (3 here) stops manual snapshots ...
        client.create_application_snapshot(ApplicationName="ingest", SnapshotName=name)
        wait_snapshot(client, name)
    with pytest.raises(client.exceptions.LimitExceededException):
        client.create_application_snapshot(ApplicationName="ingest", SnapshotName="d")
    client.stop_application(ApplicationName="ingest")  # ... not the service's own
    wait_status(client, "READY")
    assert len(snapshots(client)) == 4


def test_pages_of_snapshots_and_applications(client: Any) -> None:
    running(client)
    for name in ("a", "b"):
        client.create_application_snapshot(ApplicationName="ingest", SnapshotName=name)
        wait_snapshot(client, name)
    first = client.list_application_snapshots(ApplicationName="ingest", Limit=1)
    second = client.list_application_snapshots(ApplicationName="ingest", Limit=1, NextToken=first["NextToken"])
    assert [s["SnapshotName"] for s in first["SnapshotSummaries"] + second["SnapshotSummaries"]] == ["a", "b"]
    assert "NextToken" not in second
    with pytest.raises(client.exceptions.InvalidArgumentException):
        client.list_application_snapshots(ApplicationName="unknown")

    for name in ("zeta", "alpha"):
        create(client, name)
    pages = client.get_paginator("list_applications").paginate(PaginationConfig={"PageSize": 2})
    summaries = [s for page in pages for s in page["ApplicationSummaries"]]
    assert [s["ApplicationName"] for s in summaries] == ["alpha", "ingest", "zeta"]
    assert {s["ApplicationStatus"] for s in summaries} == {"READY", "RUNNING"}


def test_update_optimistic_locking_and_configuration(client: Any) -> None:
    create(client, EnvironmentProperties={"PropertyGroups": [
        {"PropertyGroupId": "kafka", "PropertyMap": {"bootstrap": "old:9092"}},
        {"PropertyGroupId": "old", "PropertyMap": {"x": "1"}}]})
    with pytest.raises(client.exceptions.InvalidArgumentException, match="CurrentApplicationVersionId"):
        client.update_application(ApplicationName="ingest")
    answer = client.update_application(ApplicationName="ingest", CurrentApplicationVersionId=1,
                                       ApplicationConfigurationUpdate={
        "ApplicationCodeConfigurationUpdate": {"CodeContentUpdate": {
            "S3ContentLocationUpdate": {"FileKeyUpdate": "ingest-2.zip"}}},
        "EnvironmentPropertyUpdates": {"PropertyGroups": [
            {"PropertyGroupId": "kafka", "PropertyMap": {"bootstrap": "new:9092"}}]},
        "FlinkApplicationConfigurationUpdate": {"ParallelismConfigurationUpdate": {
            "ConfigurationTypeUpdate": "CUSTOM", "ParallelismUpdate": 4, "AutoScalingEnabledUpdate": False}}})
    new = answer["ApplicationDetail"]
    assert (new["ApplicationVersionId"], new["ApplicationVersionUpdatedFrom"]) == (2, 1)
    assert new["ApplicationStatus"] == "READY"
    config = new["ApplicationConfigurationDescription"]
    code = config["ApplicationCodeConfigurationDescription"]["CodeContentDescription"]
    assert code["S3ApplicationCodeLocationDescription"] == {"BucketARN": "arn:aws:s3:::medistream-code",
                                                            "FileKey": "ingest-2.zip"}
    assert config["EnvironmentPropertyDescriptions"]["PropertyGroupDescriptions"] == [
        {"PropertyGroupId": "kafka", "PropertyMap": {"bootstrap": "new:9092"}}]  # the groups are replaced
    parallelism = config["FlinkApplicationConfigurationDescription"]["ParallelismConfigurationDescription"]
    assert (parallelism["Parallelism"], parallelism["CurrentParallelism"], parallelism["AutoScalingEnabled"]) == (
        4, 4, False)

    with pytest.raises(client.exceptions.ConcurrentModificationException, match="version 2, not 1"):
        client.update_application(ApplicationName="ingest", CurrentApplicationVersionId=1)
    stale_token = new["ConditionalToken"]
    to_default = {"ParallelismConfigurationUpdate": {"ConfigurationTypeUpdate": "DEFAULT"}}
    client.update_application(ApplicationName="ingest", ConditionalToken=stale_token,
                              ApplicationConfigurationUpdate={"FlinkApplicationConfigurationUpdate": to_default})
    assert detail(client)["ApplicationVersionId"] == 3
    with pytest.raises(client.exceptions.ConcurrentModificationException, match="ConditionalToken"):
        client.update_application(ApplicationName="ingest", ConditionalToken=stale_token)
    flink = detail(client)["ApplicationConfigurationDescription"]["FlinkApplicationConfigurationDescription"]
    assert flink["ParallelismConfigurationDescription"]["Parallelism"] == 1  # DEFAULT shows the service's defaults

    with pytest.raises(client.exceptions.ResourceNotFoundException):  # checked before anything changes
        client.update_application(ApplicationName="ingest", CurrentApplicationVersionId=3, RunConfigurationUpdate={
            "ApplicationRestoreConfiguration": {"ApplicationRestoreType": "RESTORE_FROM_CUSTOM_SNAPSHOT",
                                                "SnapshotName": "none"}})
    with pytest.raises(client.exceptions.InvalidArgumentException, match="more than once"):
        twice = {"PropertyGroups": [{"PropertyGroupId": "g", "PropertyMap": {"a": "1"}},
                                    {"PropertyGroupId": "g", "PropertyMap": {"b": "2"}}]}
        client.update_application(ApplicationName="ingest", CurrentApplicationVersionId=3,
                                  ApplicationConfigurationUpdate={"EnvironmentPropertyUpdates": twice})
    assert detail(client)["ApplicationVersionId"] == 3  # refusals make no version


def test_update_of_a_running_application_restarts_from_its_snapshot(client: Any, standin: ManagedFlinkHandle) -> None:
    running(client)
    answer = client.update_application(ApplicationName="ingest", CurrentApplicationVersionId=1,
                                       ApplicationConfigurationUpdate={"ApplicationCodeConfigurationUpdate": {
                                           "CodeContentUpdate": {"S3ContentLocationUpdate": {
                                               "FileKeyUpdate": "ingest-2.zip", "ObjectVersionUpdate": "v7"}}}})
    assert answer["OperationId"] and answer["ApplicationDetail"]["ApplicationVersionId"] == 2
    assert status(client) == "UPDATING"
    with pytest.raises(client.exceptions.ResourceInUseException, match="UPDATING status"):
        client.update_application(ApplicationName="ingest", CurrentApplicationVersionId=2)
    wait_status(client, "RUNNING")
    [taken] = snapshots(client).values()
    assert (taken["SnapshotStatus"], taken["ApplicationVersionId"]) == ("READY", 1)  # the state of version 1
    runner = standin.runner
    assert isinstance(runner, InMemoryRunner)
    stop, start = runner.actions("ingest")[-2:]
    assert (stop.action, stop.version_id, stop.snapshot) == ("stop", 1, taken["SnapshotName"])
    assert (start.action, start.version_id, start.snapshot) == ("start", 2, taken["SnapshotName"])


def test_delete_application(client: Any) -> None:
    running(client)
    client.create_application_snapshot(ApplicationName="ingest", SnapshotName="s1")
    wait_snapshot(client, "s1")
    created = detail(client)["CreateTimestamp"]
    with pytest.raises(client.exceptions.InvalidArgumentException, match="CreateTimestamp"):
        client.delete_application(ApplicationName="ingest", CreateTimestamp=created.timestamp() + 60)
    client.delete_application(ApplicationName="ingest", CreateTimestamp=created)
    assert status(client) == "DELETING"
    with pytest.raises(client.exceptions.ResourceInUseException):
        client.start_application(ApplicationName="ingest")
    wait_until(lambda: client.list_applications()["ApplicationSummaries"] == [], "ingest deleted")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_application(ApplicationName="ingest")
    create(client)  # the name is free again, with no snapshots
    assert snapshots(client) == {}


def test_create_refuses_what_the_service_refuses(client: Any) -> None:
    create(client)
    with pytest.raises(client.exceptions.ResourceInUseException, match="already exists"):
        create(client)
    with pytest.raises(client.exceptions.InvalidArgumentException, match="Apache Flink applications only"):
        client.create_application(ApplicationName="sql", RuntimeEnvironment="SQL-1_0", ServiceExecutionRole=ROLE)
    with pytest.raises(client.exceptions.InvalidArgumentException, match="ZIPFILE"):
        create(client, "text", ApplicationCodeConfiguration={"CodeContentType": "PLAINTEXT",
                                                             "CodeContent": {"TextContent": "SELECT 1"}})
    with pytest.raises(client.exceptions.InvalidArgumentException, match="S3 bucket"):
        create(client, "badarn", ApplicationCodeConfiguration={"CodeContentType": "ZIPFILE", "CodeContent": {
            "S3ContentLocation": {"BucketARN": "arn:aws:iam::1:role/x", "FileKey": "k"}}})
    inline = create(client, "inline", ApplicationCodeConfiguration={
        "CodeContentType": "ZIPFILE", "CodeContent": {"ZipFileContent": b"PK\x03\x04zip"}})
    code = inline["ApplicationConfigurationDescription"]["ApplicationCodeConfigurationDescription"]
    assert code["CodeContentDescription"]["CodeSize"] == 7
    client.create_application(ApplicationName="nocode", RuntimeEnvironment="FLINK-2_2", ServiceExecutionRole=ROLE)
    with pytest.raises(client.exceptions.InvalidApplicationConfigurationException, match="no code"):
        client.start_application(ApplicationName="nocode")
    with pytest.raises(client.exceptions.UnsupportedOperationException, match="does not serve"):
        client.tag_resource(ResourceARN=inline["ApplicationARN"], Tags=[{"Key": "k", "Value": "v"}])


def test_wire_errors_as_botocore_raises_them(standin: ManagedFlinkHandle) -> None:
    unchecked = make_client(standin.url, parameter_validation=False)  # lets bad input reach the server
    with pytest.raises(unchecked.exceptions.InvalidArgumentException, match="at 'applicationName'.*pattern"):
        unchecked.describe_application(ApplicationName="no spaces")
    with pytest.raises(unchecked.exceptions.InvalidArgumentException, match="'runtimeEnvironment'.*enum"):
        unchecked.create_application(ApplicationName="a", RuntimeEnvironment="FLINK-9", ServiceExecutionRole=ROLE)
    with pytest.raises(unchecked.exceptions.InvalidArgumentException, match="'snapshotName'.*must not be null"):
        unchecked.create_application_snapshot(ApplicationName="a")
    with pytest.raises(unchecked.exceptions.InvalidArgumentException, match="less than or equal to 50"):
        unchecked.list_applications(Limit=51)
    with pytest.raises(unchecked.exceptions.InvalidRequestException, match="must be a boolean"):
        unchecked.stop_application(ApplicationName="a", Force="yes")
    with pytest.raises(ClientError) as caught:
        unchecked.describe_application(ApplicationName="missing")
    err = caught.value.response
    assert err["Error"] == {"Code": "ResourceNotFoundException", "Message": "Application missing does not exist"}
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400 and err["ResponseMetadata"]["RequestId"]

    def raw(headers: dict[str, str], body: bytes = b"{}") -> tuple[int, str]:
        req = urllib.request.Request(standin.url + "/", data=body, method="POST",  # noqa: S310 - loopback URL
                                     headers={"Content-Type": "application/x-amz-json-1.1", **headers})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    signed = {"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/kinesisanalytics/aws4_request"}
    target = "KinesisAnalytics_20180523.ListApplications"
    assert raw({"X-Amz-Target": target}) == (
        403, '{"__type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"}')
    assert raw({**signed, "X-Amz-Target": "KinesisAnalytics_20180523.Nope"})[1].startswith(
        '{"__type": "UnknownOperationException"')
    assert raw({**signed, "X-Amz-Target": target}, b"{not json")[1].startswith('{"__type": "SerializationException"')
    assert raw({**signed, "X-Amz-Target": target}) == (200, '{"ApplicationSummaries": []}')
    assert raw({**signed, "X-Amz-Target": target}, b'{"Bogus": 1}') == (
        400, '{"__type": "InvalidRequestException", "message": "\'body\' has no member \'Bogus\'"}')


class FailingRunner(InMemoryRunner):
    """Fails the start of applications named fail-*, and every snapshot called bad."""

    async def start(self, app: AppView, restore: SnapshotRef | None, allow_non_restored_state: bool) -> None:
        await super().start(app, restore, allow_non_restored_state)
        if app.name.startswith("fail-"):
            raise RuntimeError("job failed to start")

    async def snapshot(self, app: AppView, snapshot: SnapshotRef) -> str | None:
        location = await super().snapshot(app, snapshot)
        if snapshot.name == "bad":
            raise RuntimeError("savepoint failed")
        return location


def test_runner_failures_end_the_transition() -> None:
    handle = start_in_thread(StandinConfig(), FailingRunner(Delays.fast()))
    try:
        client = make_client(handle.url)
        create(client, "fail-start")
        client.start_application(ApplicationName="fail-start")
        wait_until(lambda: handle.runner.actions("fail-start") != [] and status(client, "fail-start") == "READY",  # type: ignore[attr-defined]
                   "the failed start back in READY")
        running(client)
        client.create_application_snapshot(ApplicationName="ingest", SnapshotName="bad")
        wait_snapshot(client, "bad", "FAILED")
        assert status(client) == "RUNNING"
        with pytest.raises(client.exceptions.InvalidArgumentException, match="FAILED"):
            client.update_application(ApplicationName="ingest", CurrentApplicationVersionId=1, RunConfigurationUpdate={
                "ApplicationRestoreConfiguration": {"ApplicationRestoreType": "RESTORE_FROM_CUSTOM_SNAPSHOT",
                                                    "SnapshotName": "bad"}})
    finally:
        handle.stop()


def test_process_mode_serves_on_loopback_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, log_file = free_loopback_port(), tmp_path / "managed_flink.log"
    argv = [sys.executable, "-m", "infra.local.managed_flink", "--port", str(port), "--start-s", "0.1",
            "--log-file", str(log_file)]
    proc = subprocess.Popen(argv, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        def listening_or_gone() -> bool:
            return "listening" in (log_file.read_text() if log_file.exists() else "") or proc.poll() is not None

        wait_until(listening_or_gone, "the stand-in to listen", 20)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("tcp") if c.status == "LISTEN"]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
        client = make_client(f"http://127.0.0.1:{port}")
        running(client)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "StartApplication -> 200" in log_file.read_text()
