"""An embedded mini-cluster's REST API on 127.0.0.1: one job's state, operator counters, checkpoints.

The mini-cluster serves it when the job's configuration names `rest.port` (a free loopback port) and
binds 127.0.0.1 (jobs/runtime.py); `metrics.fetcher.update-interval` decides how fresh the counters are.
Used by `medistream batch` (when its source has read every file) and by the dedup benchmark.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Collection
from typing import Any

# "0.<operator>.<metric>": subtask 0 (parallelism 1); the planner's "[<n>]" suffixes are dropped.
COUNTER = re.compile(r"^0\.(?P<operator>[^.]+)\.(?P<metric>numRecordsIn|numRecordsOut|duplicates_dropped)$")
# The ingest operator's per-feed counts (connectors/metrics/flink_counters.py), as the REST API names them:
# <subtask>.<operator>.kinesisanalytics.feed.<feed>[.reason.<reason>].<count>
FEED_COUNTER = re.compile(r"^\d+\.[^.]+\.kinesisanalytics\.feed\.(?P<feed>[^.]+)(?:\.reason\.(?P<reason>[^.]+))?"
                          r"\.(?P<metric>[A-Za-z]+)$")


class MiniClusterRest:
    """GET/POST /jobs/<job>... on the mini-cluster's loopback REST port."""

    def __init__(self, port: int, job_id: str) -> None:
        self.base, self.job = f"http://127.0.0.1:{port}", job_id

    @classmethod
    def of_only_job(cls, port: int) -> MiniClusterRest:
        """The API of the one job a mini-cluster runs (ValueError before it has one)."""
        jobs = cls(port, "").call("")["jobs"]
        if not jobs:
            raise ValueError("no job yet")
        return cls(port, str(jobs[0]["id"]))

    def call(self, path: str, body: dict[str, Any] | None = None, timeout_s: float = 10.0) -> Any:
        """GET (or POST `body`) /jobs/<job><path> and decode the JSON answer."""
        from urllib.request import Request, urlopen

        data = None if body is None else json.dumps(body).encode()
        request = Request(f"{self.base}/jobs{f'/{self.job}' if self.job else ''}{path}", data=data,  # noqa: S310 (fixed local URL)
                          headers={"Content-Type": "application/json"})
        with urlopen(request, timeout=timeout_s) as response:  # noqa: S310  # nosec B310
            return json.load(response)

    def state(self) -> str:
        """The job's state: RUNNING, RESTARTING, FAILED, ..."""
        return str(self.call("")["state"])

    def operator_counts(self) -> dict[str, dict[str, int]]:
        """Record counters of every operator: {"Deduplicate": {"numRecordsIn": n, ...}, ...}."""
        counts: dict[str, dict[str, int]] = {}
        for vertex in self.call("")["vertices"]:
            path = f"/vertices/{vertex['id']}/metrics"
            names = [m["id"] for m in self.call(path) if COUNTER.match(m["id"])]
            if names:
                for metric in self.call(f"{path}?get=" + ",".join(names)):
                    match = COUNTER.match(metric["id"])
                    if match is None:
                        continue
                    operator = re.sub(r"\[\d+\]", "", match["operator"])
                    counts.setdefault(operator, {})[match["metric"]] = int(float(metric["value"]))
        return counts

    def feed_quality(self, warm_up_s: float = 15.0) -> dict[str, dict[str, Any]]:
        """Per feed, what the ingest operator counted in this run, summed over its subtasks: records in,
        accepted, dead letters, corrections, PHI fields protected, and dead letters by reason code
        ({feed: {"recordsIn": n, ..., "deadLettersByReason": {reason: n}}}; names and counts only).

        The REST API answers from its metric store, which a cluster fills after the first request for metrics
        (every `metrics.fetcher.update-interval`, 10 s by default): a job with the ingest operator is asked
        again until its per-feed counters are listed, for up to `warm_up_s`; a job without it has none."""
        vertices = self.call("")["vertices"]
        if not any(str(v.get("name", "")).startswith("ingest") for v in vertices):
            return {}
        deadline = time.monotonic() + warm_up_s
        while True:
            listed = {v["id"]: [m["id"] for m in self.call(f"/vertices/{v['id']}/metrics")
                                if FEED_COUNTER.match(m["id"])] for v in vertices}
            if any(listed.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        metrics: list[dict[str, Any]] = []
        for vertex, names in listed.items():
            for start in range(0, len(names), 50):  # a bounded URL per request
                metrics += self.call(f"/vertices/{vertex}/metrics?get=" + ",".join(names[start:start + 50]))
        return feed_quality(metrics)

    def settled_counts(self, operators: Collection[str], quiet_s: float = 2.0,
                       timeout_s: float = 30.0) -> dict[str, dict[str, int]]:
        """operator_counts() of `operators` once none has moved for `quiet_s`, for input that has stopped (e.g.
        after a checkpoint that follows the last record): the REST API serves counters from its last fetch, which
        lags behind the tasks (by seconds on a loaded machine), so one read may be stale. (Sink committers count
        on every checkpoint: they never settle.)"""
        def read() -> dict[str, dict[str, int]]:
            return {op: found for op, found in self.operator_counts().items() if op in operators}

        deadline = time.monotonic() + timeout_s
        counts, since = read(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = read()
            if now != counts:
                counts, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return counts
        raise TimeoutError(f"counters of {sorted(operators)} still moving after {timeout_s} s")

    def checkpoint_summary(self) -> dict[str, Any]:
        """The job's checkpoints so far: counts, the newest completed one's type (ALIGNED_CHECKPOINT,
        UNALIGNED_CHECKPOINT...), and min/P50/P95/max over the completed ones of their end-to-end duration (ms),
        checkpointed size and the in-flight data an unaligned checkpoint persisted (bytes)."""
        stats = self.call("/checkpoints")
        latest = (stats.get("latest") or {}).get("completed") or {}
        summary = stats.get("summary") or {}
        return {"counts": stats.get("counts"), "latest_type": latest.get("checkpoint_type"),
                **{name: {k: (summary.get(name) or {}).get(k) for k in ("min", "p50", "p95", "max")}
                   for name in ("end_to_end_duration", "checkpointed_size", "persisted_data")}}

    def checkpoint_now(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Trigger a full checkpoint, wait for it, return its details (sizes per vertex, path)."""
        trigger = self.call("/checkpoints", {"checkpointType": "FULL"})["request-id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.call(f"/checkpoints/{trigger}")
            if status["status"]["id"] == "COMPLETED":
                operation = status["operation"]
                if "checkpointId" not in operation:
                    raise RuntimeError(f"checkpoint failed: {operation}")
                return self._checkpoint_details(int(operation["checkpointId"]), deadline)
            time.sleep(0.2)
        raise TimeoutError(f"checkpoint not completed within {timeout_s} s")

    def _checkpoint_details(self, checkpoint_id: int, deadline: float) -> dict[str, Any]:
        """A completed checkpoint's details. The REST API serves checkpoint statistics from a cache it refreshes
        every few seconds, so a checkpoint that has just completed can be 404 there for a moment (seen on a loaded
        machine): asked again until `deadline`."""
        from urllib.error import HTTPError

        while True:
            try:
                return dict(self.call(f"/checkpoints/details/{checkpoint_id}"))
            except HTTPError as error:
                if error.code != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)


def feed_quality(metrics: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The per-feed counts in vertex metric values ([{"id": ..., "value": ...}]): MiniClusterRest.feed_quality's."""
    quality: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        match = FEED_COUNTER.match(str(metric.get("id", "")))
        if match is None:
            continue
        value = int(float(metric["value"]))
        feed = quality.setdefault(match["feed"], {})
        if match["reason"] is None:
            feed[match["metric"]] = feed.get(match["metric"], 0) + value
        elif match["metric"] == "deadLetters":
            by_reason = feed.setdefault("deadLettersByReason", {})
            by_reason[match["reason"]] = by_reason.get(match["reason"], 0) + value
    return quality
