"""`medistream cluster` for real: one JobManager and two TaskManagers from the wheel's scripts, on loopback.

One cluster for the module (its own folder, free loopback ports, a run-unique S3 prefix on the local
stack), stopped by PID in the finalizer. Jobs are tests/integration/cluster_job.py submitted with
`python -m tools.cluster submit`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import psutil
import pytest

from infra.local import process
from infra.local.settings import REPO_ROOT, StackSettings
from tools import cluster, cluster_status
from tools.cluster_config import ClusterSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
JOB = Path(__file__).with_name("cluster_job.py")


def _wait(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def s3(stack: StackSettings):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=stack.s3_endpoint(), region_name=stack.region,
                        aws_access_key_id=stack.access_key_id, aws_secret_access_key=stack.secret_access_key)


@pytest.fixture(scope="module")
def settings(stack: StackSettings, tmp_path_factory: pytest.TempPathFactory, s3) -> Iterator[ClusterSettings]:  # type: ignore[no-untyped-def]
    run = os.urandom(4).hex()
    ports = set()
    while len(ports) < 3:
        ports.add(process.free_loopback_port())
    rest, rpc, blob = sorted(ports)
    found = ClusterSettings(home=tmp_path_factory.mktemp("cluster"), rest_port=rest, rpc_port=rpc, blob_port=blob,
                            checkpoints_uri=f"s3://{stack.warehouse_bucket}/cluster-test-{run}",
                            checkpoint_interval="3 s")
    yield found
    cluster.down(found, term_timeout_s=15)
    prefix = f"cluster-test-{run}/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.warehouse_bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=stack.warehouse_bucket, Key=item["Key"])


@pytest.fixture(scope="module")
def running(settings: ClusterSettings) -> ClusterSettings:
    cluster.up(settings)
    return settings


def submit(settings: ClusterSettings, *args: str) -> str:
    return cluster.submit(settings, JOB, [], [], 2, list(args))


def test_up_starts_one_jobmanager_and_two_taskmanagers_with_four_slots(running: ClusterSettings) -> None:
    found = cluster.status(running)
    assert {name: p["alive"] for name, p in found["processes"].items()} == {"jobmanager": True, "tm1": True,
                                                                          "tm2": True}
    assert len({p["pid"] for p in found["processes"].values()}) == 3
    assert len(found["taskmanagers"]) == 2 and found["slots_total"] == 4
    assert found["flink_version"] == "2.2.1"
    again = cluster.up(running)  # idempotent: nothing started, the same processes
    assert "started" not in again and again["processes"] == {
        name: {**p, "rss_mib": again["processes"][name]["rss_mib"]} for name, p in found["processes"].items()}


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_a_job_at_parallelism_two_finishes_with_complete_output(running: ClusterSettings, tmp_path: Path,
                                                                mode: str) -> None:
    out = tmp_path / "out"
    job = submit(running, "finite", str(out), "2000", mode)
    assert cluster_status.wait_for_job(running, job, {"FINISHED"}, 180) == "FINISHED"
    vertices = cluster_status.rest_get(running, f"/jobs/{job}")["vertices"]
    assert max(v["parallelism"] for v in vertices) == 2
    parts = [p for p in out.rglob("part-*") if not p.name.startswith(".")]
    assert len(parts) == 2  # one committed file per writer subtask
    lines = [line for p in parts for line in p.read_text().splitlines()]
    assert sorted(lines) == sorted(f"{i}:{i * i}" for i in range(2000))


def _job_taskmanagers(settings: ClusterSettings, job: str) -> set[str]:
    found = set()
    for vertex in cluster_status.rest_get(settings, f"/jobs/{job}")["vertices"]:
        hosts = cluster_status.rest_get(settings, f"/jobs/{job}/vertices/{vertex['id']}/taskmanagers") or {}
        found |= {tm.get("taskmanager-id") for tm in hosts.get("taskmanagers", [])}
    return found


def test_checkpoints_go_to_s3_and_a_killed_taskmanager_is_replaced_and_restored_from(
        running: ClusterSettings, stack: StackSettings, s3) -> None:  # type: ignore[no-untyped-def]
    job = submit(running, "streaming")
    assert cluster_status.wait_for_job(running, job, {"RUNNING"}, 120) == "RUNNING"

    def completed() -> int:
        counts = (cluster_status.rest_get(running, f"/jobs/{job}/checkpoints") or {}).get("counts", {})
        return int(counts.get("completed", 0))

    _wait(lambda: completed() >= 1, 120, "a completed checkpoint")
    prefix = f"{running.checkpoints_uri.removeprefix(f's3://{stack.warehouse_bucket}/')}/checkpoints/{job}/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.warehouse_bucket, Prefix=prefix).get("Contents", [])]
    assert any(k.endswith("/_metadata") and "/chk-" in k for k in keys), keys
    assert any("/shared/" in k for k in keys), keys  # RocksDB's incremental files

    # SIGKILL a TaskManager that runs part of the job; `cluster up` tops it up with a replacement.
    hosts = _job_taskmanagers(running, job)
    victim = next(name for name in ("tm1", "tm2")
                  if process.read_pid(cluster.pid_file(running, name)).marker in hosts)  # type: ignore[union-attr]
    victim_pid = process.read_pid(cluster.pid_file(running, victim)).pid  # type: ignore[union-attr]
    os.kill(victim_pid, signal.SIGKILL)
    psutil.Process(victim_pid).wait(timeout=30)  # gone (and reaped: it is our child) before `up` looks for it
    result = cluster.up(running)
    assert result["started"] == [victim]
    assert result["processes"][victim]["pid"] != victim_pid and len(result["taskmanagers"]) == 2

    def restored() -> dict | None:
        if cluster_status.rest_get(running, f"/jobs/{job}").get("state") != "RUNNING":
            return None
        return (cluster_status.rest_get(running, f"/jobs/{job}/checkpoints") or {}).get("latest", {}).get("restored")

    point = _wait(restored, 180, "the job RUNNING again, restored from a checkpoint")
    assert point["external_path"].startswith(running.checkpoints_uri + "/checkpoints/" + job)
    before = completed()
    _wait(lambda: completed() > before, 120, "a checkpoint completed after the restore")
    cluster_status.rest_get(running, f"/jobs/{job}")  # still answering
    urllib_cancel(running, job)


def test_up_starts_again_a_taskmanager_that_exits_while_it_waits(running: ClusterSettings) -> None:
    # tm1 is SIGKILLed; while `up` waits for its replacement to register, tm2 exits too (as a Beam clean-up failure
    # once took it down: README, Known limits). `up` starts tm2 again and returns with the cluster whole.
    import threading

    def pid(name: str) -> int:
        return process.read_pid(cluster.pid_file(running, name)).pid  # type: ignore[union-attr]

    first, second = pid("tm1"), pid("tm2")
    os.kill(first, signal.SIGKILL)
    psutil.Process(first).wait(timeout=30)
    result: dict = {}
    upping = threading.Thread(target=lambda: result.update(cluster.up(running)), daemon=True)
    upping.start()
    _wait(lambda: pid("tm1") != first, 30, "tm1's replacement launched")
    os.kill(second, signal.SIGKILL)
    upping.join(cluster.TASKMANAGER_RESTARTS * 2 * running.start_timeout_s)
    assert not upping.is_alive() and result, "`up` did not return"
    assert sorted(result["started"]) == ["tm1", "tm2"]
    assert pid("tm2") != second and len(result["taskmanagers"]) == 2
    again = cluster.up(running)  # whole: nothing more to start, the same processes
    assert "started" not in again
    assert {n: p["pid"] for n, p in again["processes"].items()} == {n: p["pid"] for n, p in result["processes"].items()}


def urllib_cancel(settings: ClusterSettings, job: str) -> None:
    import urllib.request

    request = urllib.request.Request(f"{settings.rest_url()}/jobs/{job}?mode=cancel", method="PATCH")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - our loopback REST API
        pass
    assert cluster_status.wait_for_job(settings, job, {"CANCELED"}, 60) == "CANCELED"


def test_status_of_a_failed_job_names_its_root_cause(running: ClusterSettings) -> None:
    message = f"deliberate cluster test failure {os.urandom(3).hex()}"
    job = submit(running, "fail", message)
    assert cluster_status.wait_for_job(running, job, {"FAILED"}, 180) == "FAILED"
    entry = next(j for j in cluster.status(running)["jobs"] if j["id"] == job)
    assert entry["state"] == "FAILED"
    assert message in entry["failure"]["root_cause"]
    assert entry["failure"]["root_cause"].startswith("ValueError")


def test_up_with_a_port_in_use_names_it_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = os.environ | {"MEDISTREAM_HOME": str(tmp_path), "MEDISTREAM_FLINK_REST_PORT": str(port)}
        done = subprocess.run([sys.executable, "-m", "tools.cluster", "up"], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"127.0.0.1:{port}" in done.stderr and "MEDISTREAM_FLINK_REST_PORT" in done.stderr
    assert f"pid {os.getpid()}" in done.stderr  # the holder: this test's own process
    assert not (tmp_path / "cluster" / "run").exists() or not any((tmp_path / "cluster" / "run").iterdir())


def test_down_leaves_no_process_behind(running: ClusterSettings) -> None:
    leaders = [process.read_pid(cluster.pid_file(running, n)) for n in running.processes()]
    sessions = {r.pid for r in leaders if r is not None}
    assert len(sessions) == 3
    stopped = cluster.down(running)
    assert set(stopped) == {"jobmanager", "tm1", "tm2"} and all(stopped.values())
    left = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue  # exited; only its status waits for a parent (init, for a killed worker's) to collect it
            if os.getsid(proc.pid) in sessions or str(running.home) in " ".join(proc.info["cmdline"] or []):
                left.append(proc.info)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    assert left == []
    assert cluster.down(running) == {"tm1": None, "tm2": None, "jobmanager": None}  # idempotent
    assert cluster.status(running)["rest_answers"] is False
