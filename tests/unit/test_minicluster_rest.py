"""`MiniClusterRest.checkpoint_now` and `checkpoint_summary` (and the ingest bench's CheckpointWatch over it) against a
loopback server that answers as Flink's REST API does: a completed checkpoint's details are 404 until its statistics
cache is refreshed; the checkpoint statistics are an answer recorded from the ingest bench's job (2026-12-07, 300,000
claims, unaligned checkpoints), trimmed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.error import HTTPError

import pytest

from tools.minicluster_rest import MiniClusterRest

JOB = "a" * 32
# GET /jobs/<job>/checkpoints of the running bench job (bench.ingest_bench), cut to what checkpoint_summary reads.
RECORDED = {
    "counts": {"restored": 0, "total": 26, "in_progress": 0, "completed": 25, "failed": 1},
    "summary": {
        "checkpointed_size": {"min": 317060, "max": 57063768, "avg": 15412713, "p50": 10739753.0,
                              "p90": 45454739.800000004, "p95": 54242384.39999999, "p99": 57063768.0},
        "end_to_end_duration": {"min": 312, "max": 1369, "avg": 433, "p50": 381.0, "p90": 559.6000000000001,
                                "p95": 1138.5999999999995, "p99": 1369.0},
        "persisted_data": {"min": 22332, "max": 98535, "avg": 51324, "p50": 46061.0, "p95": 98535.0, "p99": 98535.0},
    },
    "latest": {"completed": {"className": "completed", "id": 25, "status": "COMPLETED", "end_to_end_duration": 437,
                             "persisted_data": 53521, "checkpoint_type": "UNALIGNED_CHECKPOINT"},
               "savepoint": None, "failed": None, "restored": None},
    "history": [],
}


class FlinkCheckpointApi(ThreadingHTTPServer):
    """Trigger -> COMPLETED with checkpoint 7; its details 404 for the first `stale` reads (the cache), then 200."""

    def __init__(self, stale: int) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.stale = stale
        self.detail_reads = 0


class Handler(BaseHTTPRequestHandler):
    server: FlinkCheckpointApi

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == f"/jobs/{JOB}/checkpoints":
            self._answer(202, {"request-id": "r1"})
        else:
            self._answer(404, {"errors": ["Not found"]})

    def do_GET(self) -> None:
        if self.path == "/jobs":
            self._answer(200, {"jobs": [{"id": JOB, "status": "RUNNING"}]})
        elif self.path == f"/jobs/{JOB}/checkpoints":
            self._answer(200, RECORDED)
        elif self.path == f"/jobs/{JOB}/checkpoints/r1":
            self._answer(200, {"status": {"id": "COMPLETED"}, "operation": {"checkpointId": 7}})
        elif self.path == f"/jobs/{JOB}/checkpoints/details/7":
            self.server.detail_reads += 1
            if self.server.detail_reads <= self.server.stale:
                self._answer(404, {"errors": ["Could not find checkpointing statistics for checkpoint 7."]})
            else:
                self._answer(200, {"id": 7, "status": "COMPLETED", "external_path": "file:/tmp/chk-7"})
        else:
            self._answer(404, {"errors": ["Not found"]})

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[FlinkCheckpointApi]:
    server = FlinkCheckpointApi(stale=request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("api", [0, 3], indirect=True)
def test_a_completed_checkpoint_is_read_once_its_statistics_are_served(api: FlinkCheckpointApi) -> None:
    rest = MiniClusterRest(api.server_address[1], JOB)
    details = rest.checkpoint_now(timeout_s=30)
    assert details["id"] == 7 and details["external_path"] == "file:/tmp/chk-7"
    assert api.detail_reads == api.stale + 1


@pytest.mark.parametrize("api", [10_000], indirect=True)
def test_details_that_never_appear_fail_at_the_deadline_with_the_404(api: FlinkCheckpointApi) -> None:
    rest = MiniClusterRest(api.server_address[1], JOB)
    with pytest.raises(HTTPError) as raised:
        rest.checkpoint_now(timeout_s=1.5)
    assert raised.value.code == 404


@pytest.mark.parametrize("api", [0], indirect=True)
def test_the_checkpoint_summary_names_the_type_and_the_percentiles(api: FlinkCheckpointApi) -> None:
    summary = MiniClusterRest.of_only_job(api.server_address[1]).checkpoint_summary()
    assert summary["counts"]["completed"] == 25 and summary["latest_type"] == "UNALIGNED_CHECKPOINT"
    assert summary["end_to_end_duration"] == {"min": 312, "p50": 381.0, "p95": 1138.5999999999995, "max": 1369}
    assert summary["persisted_data"]["max"] == 98535 and summary["checkpointed_size"]["p50"] == 10739753.0


@pytest.mark.parametrize("api", [0], indirect=True)
def test_the_bench_keeps_the_last_summary_while_the_api_answers_and_stops_when_told(
        api: FlinkCheckpointApi, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.ingest_bench import CheckpointWatch

    monkeypatch.setattr(CheckpointWatch, "EVERY_S", 0.05)
    with CheckpointWatch(api.server_address[1]) as watch:
        deadline = time.monotonic() + 10
        while watch.last is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watch.last is not None and watch.last["latest_type"] == "UNALIGNED_CHECKPOINT"
        api.shutdown()  # the job ended: its API is gone, the last answer stays
        api.server_close()
        time.sleep(0.3)
    assert watch.last["counts"]["completed"] == 25 and not watch._thread.is_alive()


def test_a_job_that_never_answers_leaves_no_summary() -> None:
    from bench.ingest_bench import CheckpointWatch
    from infra.local.process import free_loopback_port

    watch = CheckpointWatch(free_loopback_port())
    watch.EVERY_S = 0.05
    with watch:
        time.sleep(0.3)
    assert watch.last is None and not watch._thread.is_alive()


@pytest.mark.parametrize("api", [0], indirect=True)
def test_the_bench_prints_the_summary_and_says_when_there_is_none(api: FlinkCheckpointApi) -> None:
    from bench.ingest_bench import checkpoint_line

    line = checkpoint_line(MiniClusterRest.of_only_job(api.server_address[1]).checkpoint_summary())
    assert line == ("25 completed, 1 failed, newest UNALIGNED_CHECKPOINT; end to end P50 / P95 / max 381 / 1,139 / "
                    "1,369 ms; in-flight data persisted, max 98,535 bytes")
    # A job that ended before any checkpoint completed: Flink's summary then holds zeros or nothing.
    assert checkpoint_line({"counts": {"completed": 0, "failed": 2}, "end_to_end_duration": {"p50": None}}) == (
        "none completed (2 failed)")
    assert checkpoint_line(None) == "the job's API never answered"
