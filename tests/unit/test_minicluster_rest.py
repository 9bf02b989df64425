"""`MiniClusterRest.checkpoint_now` against a loopback server that answers as Flink's REST API does: a completed
checkpoint's details are 404 until its statistics cache is refreshed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.error import HTTPError

import pytest

from tools.minicluster_rest import MiniClusterRest

JOB = "a" * 32


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
        if self.path == f"/jobs/{JOB}/checkpoints/r1":
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
