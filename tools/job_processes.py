"""Local job and door processes: start them as child processes, stop them with a savepoint, kill them.

Each runs `python -m jobs.<name>` in its own process group (so a kill takes its JVM along), logging
to a file; the demo, the chaos harness, the kill tests and the benchmarks share these.
"""

from __future__ import annotations

import os
import signal
import subprocess  # nosec B404 # -- argv lists only, never a shell
import sys
import threading
from pathlib import Path

import psutil

from connectors.properties import REPO_ROOT

# The `name` a JobProcesses starts -> the module it runs.
JOB_MODULES = {"ingest": "jobs.ingest", "loader": "jobs.snowflake_load", "delivery": "jobs.partner_delivery",
               "sftp": "jobs.sftp_pull", "rest_pull": "jobs.rest_pull", "api": "jobs.ingest_api",
               "kinesis": "jobs.kinesis_pull"}


class JobProcesses:
    """Job and door processes (ingest, loader, delivery, pullers, API), each in its own process group."""

    def __init__(self, properties: Path, logs: Path) -> None:
        self.properties, self.logs = properties, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        """Start a job (`args` after its --properties), logging to <logs>/<name>.log."""
        module = JOB_MODULES[name]
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            # B603 - our own interpreter and job modules, argv list
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", module, "--properties", str(self.properties), *args], cwd=REPO_ROOT,
                stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, name: str, timeout_s: float) -> int:
        """SIGTERM one job (it stops with a savepoint) and return its exit code; -9 if it had to be killed."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:  # a stop that hangs: reported by the exit code
            self.kill(name)
            return -9

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"the {name} job exited on its own ({proc.returncode}); see {self.logs}/{name}.log")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in list(self.procs):
            try:
                self.procs[name].wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.kill(name)


class RssSampler(threading.Thread):
    """Peak resident memory of a set of process trees, sampled every 0.5 s."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak_bytes, self._stop = list(pids), 0, threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        while not self._stop.wait(0.5):
            total = 0
            for pid in self.pids:
                try:
                    root = psutil.Process(pid)
                    total += sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()


def start_job(log_path: Path, properties: Path | None = None, rest_port: int | None = None) -> subprocess.Popen[bytes]:
    """Start the ingest job as a child process in its own process group, logging to a file.

    It resumes from the newest checkpoint or savepoint, as an operator's restart would. Its own
    group lets a crash test SIGKILL the job together with its JVM. `rest_port`: its mini-cluster serves
    Flink's REST API on 127.0.0.1 there (the demo reads the run's counts from it before stopping).
    """
    argv = [sys.executable, "-m", JOB_MODULES["ingest"]] + (["--properties", str(properties)] if properties else [])
    argv += ["--rest-port", str(rest_port)] if rest_port else []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # B603 - our own interpreter and modules, argv list, no shell
        return subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ.copy(), start_new_session=True)


def stop_job(job: subprocess.Popen[bytes], timeout_s: float = 180.0) -> int:
    """Ask the job to stop with a savepoint; kill it if it does not within the timeout."""
    if job.poll() is None:
        job.send_signal(signal.SIGTERM)
        try:
            return job.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()
            return -9
    return job.returncode
