"""`medistream jobs` on the local Flink cluster: its REST API, and `medistream deploy` for starts.

A job is known by name through the last deployment of it on this cluster (`<cluster home>/deployed.json`), as
`deploy --stop` knows it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tools import cluster_status, deploy
from tools.cluster_config import ClusterSettings
from tools.job_interface import JOBS, JobControlError, JobStatus


class LocalClusterBackend:
    """The jobs deployed on `medistream cluster`."""

    target = "local"

    def __init__(self, settings: ClusterSettings | None = None) -> None:
        self.settings = settings or ClusterSettings.from_env()

    def _deployed(self, job: str) -> dict[str, str] | None:
        known = json.loads(deploy.registry(self.settings).read_text()) if deploy.registry(self.settings).exists() \
            else {}
        found: dict[str, str] | None = known.get(job)
        return found

    def _properties(self, job: str) -> Path | None:
        """The base properties the job was last deployed with (None: conf/'s)."""
        recorded = (self._deployed(job) or {}).get("properties")
        return Path(recorded) if recorded else None

    def _job_id(self, job: str) -> str:
        deployed = self._deployed(job)
        if deployed is None:
            raise JobControlError(f"{job} has never been deployed on the local cluster: deploy it first "
                                  f"(medistream deploy --target local ZIP --job {job})")
        return deployed["job_id"]

    def _get(self, path: str) -> Any:
        found = cluster_status.rest_get(self.settings, path, timeout_s=10)
        if found is None:
            raise JobControlError(f"the cluster's REST API at {self.settings.rest_url()} does not answer {path}: "
                                  "is `medistream cluster up` running?")
        return found

    def list(self) -> list[JobStatus]:
        """Every job; one whose last deployment this cluster does not know (it ran on another cluster, or the
        cluster was restarted) is UNKNOWN, without failing the others. A cluster that does not answer fails."""
        self._get("/jobs")
        found = []
        for job in JOBS:
            deployed = self._deployed(job)
            if deployed is None:
                found.append(JobStatus(job, None, "NOT_DEPLOYED"))
                continue
            try:
                found.append(self.status(job))
            except JobControlError:
                found.append(JobStatus(job, deployed["job_id"], "UNKNOWN"))
        return found

    def status(self, job: str) -> JobStatus:
        job_id = self._job_id(job)
        info = self._get(f"/jobs/{job_id}")
        checkpoints = cluster_status.rest_get(self.settings, f"/jobs/{job_id}/checkpoints") or {}
        latest = checkpoints.get("latest") or {}
        completed = latest.get("completed") or {}
        last_checkpoint = None
        if completed:
            last_checkpoint = {"id": completed.get("id"), "path": completed.get("external_path"),
                               "age_s": round(time.time() - completed.get("latest_ack_timestamp", 0) / 1000, 1),
                               "size_bytes": completed.get("checkpointed_size", completed.get("state_size")),
                               "duration_ms": completed.get("end_to_end_duration")}
        savepoint = (latest.get("savepoint") or {}).get("external_path") or \
            ((latest.get("restored") or {}).get("external_path") if (latest.get("restored") or {}).get(
                "is_savepoint") else None)
        records, lag = {}, {}
        for vertex in info.get("vertices", []):
            metrics = vertex.get("metrics", {})
            records[vertex["name"][:120]] = {"in": int(metrics.get("read-records", 0)),
                                             "out": int(metrics.get("write-records", 0))}
            pending = self._pending_records(job_id, vertex["id"])
            if pending is not None:
                lag[vertex["name"][:120]] = pending
        restarts = self._job_metric(job_id, "numRestarts")
        deployed = self._deployed(job) or {}
        return JobStatus(job=job, job_id=job_id, state=info.get("state", "UNKNOWN"),
                         uptime_s=round(info.get("duration", 0) / 1000, 1), last_checkpoint=last_checkpoint,
                         last_savepoint=savepoint, restarts=restarts, records=records, source_lag=lag,
                         version=Path(deployed.get("zip", "")).name or None,
                         checkpoints_failing=checkpoint_trouble(checkpoints))

    def _job_metric(self, job_id: str, name: str) -> int | None:
        found = cluster_status.rest_get(self.settings, f"/jobs/{job_id}/metrics?get={name}") or []
        values = [int(float(m["value"])) for m in found if m.get("id") == name and m.get("value") not in (None, "")]
        return values[0] if values else None

    def _pending_records(self, job_id: str, vertex_id: str) -> int | None:
        """Records the vertex's sources have not read yet (the Kafka source's pendingRecords), summed."""
        names = [m["id"] for m in cluster_status.rest_get(
            self.settings, f"/jobs/{job_id}/vertices/{vertex_id}/metrics") or [] if m["id"].endswith("pendingRecords")]
        if not names:
            return None
        found = cluster_status.rest_get(
            self.settings, f"/jobs/{job_id}/vertices/{vertex_id}/metrics?get={','.join(names)}") or []
        return sum(int(float(m["value"])) for m in found if m.get("value") not in (None, ""))

    def _refuse_while_checkpoints_fail(self, job: str, job_id: str, what: str) -> None:
        """A savepoint goes the way of the job's checkpoints: while they fail, refuse at once, changing nothing."""
        trouble = checkpoint_trouble(cluster_status.rest_get(self.settings, f"/jobs/{job_id}/checkpoints") or {})
        if trouble:
            raise JobControlError(f"{what} of {job} refused: {trouble}. A savepoint would fail the same way; the job "
                                  "runs on, unchanged. Fix the cause (`medistream jobs status` and the JobManager's "
                                  "log name it) and ask again once a checkpoint completes")

    def savepoint(self, job: str) -> str:
        job_id = self._job_id(job)
        self._refuse_while_checkpoints_fail(job, job_id, "the savepoint")
        try:
            return deploy.savepoint(self.settings, job_id, "savepoints",
                                    {"cancel-job": False, "formatType": "CANONICAL"})
        except deploy.DeployError as err:
            raise JobControlError(str(err)) from None

    def stop(self, job: str) -> str:
        job_id = self._job_id(job)
        self._refuse_while_checkpoints_fail(job, job_id, "stop-with-savepoint")
        try:
            return str(deploy.stop(job_id, self.settings)["savepoint"])
        except deploy.DeployError as err:
            raise JobControlError(str(err)) from None

    def start(self, job: str, zip_path: Path | None, savepoint: str | None, allow_non_restored_state: bool
              ) -> JobStatus:
        if zip_path is None:
            deployed = self._deployed(job)
            if deployed is None:
                raise JobControlError(f"{job} has never been deployed: give --zip")
            zip_path = Path(deployed["zip"])
        try:
            deploy.deploy(zip_path, [job], settings=self.settings, base_properties=self._properties(job),
                          savepoints={job: savepoint} if savepoint else None,
                          allow_non_restored_state=allow_non_restored_state)
        except deploy.DeployError as err:
            raise JobControlError(str(err)) from None
        cluster_status.wait_running(self.settings, self._job_id(job), 300)
        return self.status(job)

    def held_state(self, job: str, savepoint: str) -> dict[str, int] | None:
        from pyflink.common import Configuration

        from connectors.properties import local_aws_environment
        from jobs.runtime import initialize_filesystems, prepare_process_environment
        from tools.cluster import s3_config
        from tools.readback import s3_client
        from tools.savepoints import SavepointError, metadata_bytes, operator_states, start_gateway_quietly

        local_aws_environment()
        prepare_process_environment()
        start_gateway_quietly()  # stdout carries the command's JSON only
        s3 = s3_config()
        # Flink resolves the savepoint's own path through its file systems: load the S3 one, as the cluster does.
        conf = Configuration()
        if s3.endpoint:
            conf.set_string("s3.endpoint", s3.endpoint)
            conf.set_string("s3.path.style.access", str(s3.path_style_access).lower())
        initialize_filesystems(conf)
        try:
            return operator_states(metadata_bytes(savepoint, s3_client(s3)), savepoint)
        except SavepointError as err:
            raise JobControlError(str(err)) from None

    def running_operator_ids(self, job: str) -> set[str] | None:
        return None  # savepoints are readable here: held_state is exact

    def operator_ids(self, job: str, zip_path: Path) -> set[str]:
        try:
            return set(deploy.operator_ids(zip_path, job, self.settings, self._properties(job))["operators"])
        except deploy.DeployError as err:
            raise JobControlError(str(err)) from None


def checkpoint_trouble(checkpoints: dict[str, Any], now_ms: int | None = None) -> str | None:
    """Why a job's checkpoints are failing, from its REST `/checkpoints` statistics; None while they succeed.

    Failing means the newest checkpoint attempt that ended, ended failed: a failure younger than the
    last completed checkpoint (or with none completed since the job started).
    """
    latest = checkpoints.get("latest") or {}
    failed, completed = latest.get("failed") or {}, latest.get("completed") or {}
    if not failed or int(failed.get("id", -1)) < int(completed.get("id", -1)):
        return None
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    age = f"{max(0, now_ms - int(failed.get('failure_timestamp', now_ms))) / 1000:.0f} s ago"
    cause = cluster_status.root_cause(str(failed.get("failure_message") or "no cause recorded"))[:300]
    total = (checkpoints.get("counts") or {}).get("failed")
    since = (f"the last completed was #{completed['id']}" if completed else "none has completed since the job started")
    return (f"its checkpoints are failing (#{failed.get('id')} failed {age}: {cause}; {total} failed in all; "
            f"{since})")
