"""What the local Flink cluster's REST API and logs say: TaskManagers, slots, jobs and why a job failed."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tools.cluster_config import ClusterSettings

# The last line of a Python traceback ("ValueError: message"), as PyFlink wraps it in Java exceptions.
_PYTHON_ERROR = re.compile(r"^\s*(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b.*$")


def rest_get(settings: ClusterSettings, path: str, timeout_s: float = 3.0) -> Any | None:
    """GET a REST resource of the cluster as JSON; None when the JobManager does not answer."""
    url = settings.rest_url() + path  # always http://127.0.0.1:<port>, never a caller's URL
    try:
        # B310 - the cluster's loopback REST URL
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            return json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def taskmanager_ids(settings: ClusterSettings) -> set[str] | None:
    """Resource ids of the registered TaskManagers; None when the REST API does not answer."""
    found = rest_get(settings, "/taskmanagers")
    return None if found is None else {tm["id"] for tm in found.get("taskmanagers", [])}


def root_cause(stacktrace: str) -> str:
    """The innermost cause of a Java stack trace; for a Python UDF, the Python exception line."""
    lines = stacktrace.splitlines()
    python = [line.strip() for line in lines if "Traceback (most recent call last)" not in line
              and _PYTHON_ERROR.match(line) and not line.strip().startswith(("at ", "Caused by"))
              and not line.strip().startswith(("java.", "org.", "com.", "io."))]
    if python:
        return python[-1]
    causes = [line.removeprefix("Caused by: ").strip() for line in lines if line.startswith("Caused by: ")]
    return causes[-1] if causes else (lines[0].strip() if lines else "")


def job_exceptions(settings: ClusterSettings, job_id: str) -> dict[str, Any] | None:
    """The newest failure the JobManager recorded for a job: exception, root cause, task, TaskManager."""
    found = rest_get(settings, f"/jobs/{job_id}/exceptions?maxExceptions=5")
    if not found:
        return None
    entries = (found.get("exceptionHistory") or {}).get("entries") or []
    if entries:
        newest = max(entries, key=lambda e: e.get("timestamp") or 0)
        trace = newest.get("stacktrace", "")
        return {"exception": newest.get("exceptionName"), "root_cause": root_cause(trace),
                "task": newest.get("taskName"), "taskmanager": newest.get("taskManagerId"),
                "timestamp": newest.get("timestamp")}
    trace = found.get("root-exception")  # Flink 1.x shape
    return {"exception": trace.splitlines()[0], "root_cause": root_cause(trace)} if trace else None


def log_errors(log_dir: Path, lines: int = 10) -> list[str]:
    """The last ERROR lines (and the exception line after each) of the TaskManager logs."""
    found: list[str] = []
    for log in sorted(log_dir.glob("flink-medistream-tm*-taskexecutor-*.log")):
        text = log.read_text(errors="replace").splitlines()[-5000:]
        for index, line in enumerate(text):
            if " ERROR " in line:
                detail = text[index + 1].strip() if index + 1 < len(text) else ""
                found.append(f"{log.name}: {line.strip()}" + (f" | {detail}" if detail else ""))
    return found[-lines:]


def cluster_view(settings: ClusterSettings) -> dict[str, Any]:
    """TaskManagers, slots and jobs from the REST API; each failed job with its root cause."""
    overview = rest_get(settings, "/overview")
    if overview is None:
        return {"rest_answers": False, "taskmanagers": [], "slots_total": 0, "slots_available": 0, "jobs": []}
    tms = rest_get(settings, "/taskmanagers") or {}
    jobs = (rest_get(settings, "/jobs/overview") or {}).get("jobs", [])
    listed = []
    for job in sorted(jobs, key=lambda j: j.get("start-time", 0), reverse=True):
        entry = {"id": job["jid"], "name": job.get("name"), "state": job.get("state"),
                 "duration_s": round(job.get("duration", 0) / 1000, 1)}
        if job.get("state") in ("FAILED", "FAILING", "RESTARTING"):
            cause = job_exceptions(settings, job["jid"])
            entry["failure"] = cause or {"root_cause": None, "taskmanager_log_errors": log_errors(settings.log_dir)}
            if cause and not cause.get("root_cause"):
                entry["failure"]["taskmanager_log_errors"] = log_errors(settings.log_dir)
        listed.append(entry)
    return {
        "rest_answers": True,
        "flink_version": overview.get("flink-version"),
        "taskmanagers": [{"id": tm["id"], "slots": tm.get("slotsNumber"), "free_slots": tm.get("freeSlots")}
                         for tm in tms.get("taskmanagers", [])],
        "slots_total": overview.get("slots-total", 0),
        "slots_available": overview.get("slots-available", 0),
        "jobs_running": sum(1 for j in listed if j["state"] == "RUNNING"),
        "jobs_failed": sum(1 for j in listed if j["state"] == "FAILED"),
        "jobs": listed,
    }


def wait_for_job(settings: ClusterSettings, job_id: str, states: set[str], timeout_s: float) -> str:
    """Poll a job until it reaches one of states (or a terminal one); return the state reached."""
    deadline = time.monotonic() + timeout_s
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        found = rest_get(settings, f"/jobs/{job_id}")
        state = found.get("state", "UNKNOWN") if found else "UNKNOWN"
        if state in states or state in ("FAILED", "CANCELED", "FINISHED"):
            return str(state)
        time.sleep(1)
    return state


class JobNotRunning(RuntimeError):
    """A job ended, or did not get every vertex RUNNING in time; the message holds the cluster's jobs."""


def wait_running(settings: ClusterSettings, job_id: str, timeout_s: float, poll_s: float = 0.5) -> float:
    """Seconds until every vertex of the job is RUNNING; JobNotRunning if it ends or times out first."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        found = rest_get(settings, f"/jobs/{job_id}") or {}
        if found.get("state") in ("FAILED", "FINISHED", "CANCELED"):
            raise JobNotRunning(f"job {job_id} is {found['state']}: {cluster_view(settings)['jobs']}")
        vertices = found.get("vertices", [])
        if vertices and all(v["status"] == "RUNNING" for v in vertices):
            return time.monotonic() - start
        time.sleep(poll_s)
    raise JobNotRunning(f"job {job_id} not running after {timeout_s:.0f}s: {cluster_view(settings)['jobs']}")
