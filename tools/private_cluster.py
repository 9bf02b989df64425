"""A local Flink cluster of one's own for a test or a benchmark, and what its processes cost.

`private_cluster(...)` runs `tools.cluster` in a folder of its own, on free loopback ports, with a
run-unique checkpoint prefix; on the way out, whatever happened inside, it cancels the jobs still
live, takes the cluster down and deletes that prefix. `ClusterSampler` samples every process of a
cluster together with its children (the Python workers of a process-mode job) once a second: peak
RSS per process, and CPU seconds over any window between two readings.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from connectors.iceberg import split_s3_url
from connectors.properties import local_aws_environment
from connectors.s3 import s3_client
from infra.local import process
from tools import cluster, cluster_status
from tools.cluster_config import ClusterSettings

TERMINAL = ("FINISHED", "FAILED", "CANCELED")
# A process is keyed by PID and start time: a PID the kernel hands out again is another process.
ProcessKey = tuple[int, int]  # (pid, start ticks since boot)


def private_settings(home: Path, checkpoints_uri: str, python_executable: str,
                     checkpoint_interval: str = "10 s") -> ClusterSettings:
    """Cluster settings under `home` on three free loopback ports, checkpointing under `checkpoints_uri`."""
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(process.free_loopback_port())
    rest, rpc, blob = sorted(ports)
    return ClusterSettings(home=home, rest_port=rest, rpc_port=rpc, blob_port=blob,
                           checkpoints_uri=checkpoints_uri.rstrip("/"), checkpoint_interval=checkpoint_interval,
                           python_executable=python_executable)


def cancel(settings: ClusterSettings, job_id: str) -> None:
    """Ask the JobManager to cancel a job (no savepoint); a JobManager that does not answer is ignored."""
    request = urllib.request.Request(f"{settings.rest_url()}/jobs/{job_id}?mode=cancel", method="PATCH")  # noqa: S310
    with contextlib.suppress(OSError):
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - loopback REST


def cancel_live_jobs(settings: ClusterSettings) -> list[str]:
    """Cancel every job of the cluster that has not ended; their ids."""
    live = [job["id"] for job in (cluster_status.rest_get(settings, "/jobs") or {}).get("jobs", [])
            if job["status"] not in TERMINAL]
    for job_id in live:
        cancel(settings, job_id)
    return live


def delete_prefix(s3: Any, url: str) -> int:
    """Delete every object under an s3://bucket/prefix/ URL; how many. A whole bucket is refused."""
    bucket, prefix = split_s3_url(url)
    if not prefix.strip("/"):
        raise ValueError(f"refusing to delete a whole bucket: {url}")
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    return deleted


@contextlib.contextmanager
def private_cluster(home: Path, checkpoints_uri: str, python_executable: str, checkpoint_interval: str = "10 s",
                    term_timeout_s: float = 15.0) -> Iterator[ClusterSettings]:
    """A cluster up for the block (private_settings); then its live jobs cancelled, it down, its prefix deleted."""
    settings = private_settings(home, checkpoints_uri, python_executable, checkpoint_interval)
    try:
        cluster.up(settings)
        yield settings
    finally:
        try:
            cancel_live_jobs(settings)
        finally:
            try:
                cluster.down(settings, term_timeout_s=term_timeout_s)
            finally:
                local_aws_environment()  # the local S3 API takes any key; never look for real ones
                delete_prefix(s3_client(cluster.s3_config()), settings.checkpoints_uri + "/")


def cpu_by_process(last: Mapping[ProcessKey, tuple[str, float]], mark: Mapping[ProcessKey, float]) -> dict[str, float]:
    """CPU seconds per named process since `mark` (0 at the mark for a process born after it), children summed in."""
    spent: dict[str, float] = {}
    for key, (name, cpu) in last.items():
        spent[name] = spent.get(name, 0.0) + max(cpu - mark.get(key, 0.0), 0.0)
    return spent


class ClusterSampler:
    """Samples the named processes of a cluster, each with its descendants, every `interval_s` in a thread.

    A process's CPU counts until its last sample: one that exits between samples loses at most one
    interval, so readings (`mark`, `cpu_since`) take a sample of their own first.
    """

    def __init__(self, processes: Callable[[], Mapping[str, psutil.Process | None]], interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.peak_rss_mib: dict[str, int] = {}
        self._processes = processes
        self._cpu: dict[ProcessKey, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cluster-sampler", daemon=True)

    @classmethod
    def of(cls, settings: ClusterSettings, interval_s: float = 1.0) -> ClusterSampler:
        """A sampler of the JobManager and TaskManagers of the cluster with these settings."""
        return cls(lambda: cluster.running(settings), interval_s)

    def sample(self) -> None:
        """Read every process's cumulative CPU and the RSS of each named process with its children now."""
        with self._lock:
            for name, root in self._processes().items():
                if root is None:
                    continue
                try:
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                rss = 0
                for proc in tree:
                    try:
                        with proc.oneshot():
                            times, mem = proc.cpu_times(), proc.memory_info().rss
                            key = (proc.pid, process.start_ticks(proc.pid))
                    except psutil.Error:  # exited between listing and reading
                        continue
                    self._cpu[key] = (name, times.user + times.system)
                    rss += mem
                self.peak_rss_mib[name] = max(self.peak_rss_mib.get(name, 0), round(rss / 2**20))

    def mark(self) -> dict[ProcessKey, float]:
        """The start of a CPU window: every sampled process's cumulative CPU seconds now."""
        self.sample()
        with self._lock:
            return {key: cpu for key, (_name, cpu) in self._cpu.items()}

    def cpu_since(self, mark: Mapping[ProcessKey, float]) -> dict[str, float]:
        """CPU seconds per named process (children included) from `mark` until now."""
        self.sample()
        with self._lock:
            return cpu_by_process(self._cpu, mark)

    def reset_peaks(self) -> None:
        """Forget the peak RSS seen so far (a new run on the same cluster)."""
        with self._lock:
            self.peak_rss_mib.clear()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> ClusterSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()
