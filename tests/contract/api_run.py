"""The ingestion API's run: `jobs.ingest_api serve` as its own process (127.0.0.1, a free port) over the broker,
Secrets Manager and DynamoDB, with the feeds, helpers and client of tests/integration/ingest_api_harness.py.
A client posts batches, each with its Idempotency-Key, and retries a batch until it is answered 202; the
server is SIGKILLed mid-stream and restarted, then SIGTERMed. Afterwards it serves once more: refused requests
carry synthetic PHI values, and a replayed batch lands nothing."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any

import aiohttp

from connectors.properties import LOCAL_PROPERTIES, read_property_groups
from infra.local.pull_api.harness import synthetic_records, topic_messages
from jobs.ingest_api import add_key, wait_until_serving
from schemas.contracts import load_contracts
from tests.contract.base import Harness, Run
from tests.integration.ingest_api_harness import BOOTSTRAP, _contracts, post
from tests.integration.test_phi_outputs import phi_values, with_canary_names
from tools.checks.leak_scan import Needles
from tools.job_processes import JobProcesses

BATCH, BATCHES_PER_WAVE, MAX_BATCH, SHIPPED = 10, 30, 50, "hospital_a_claims"
PAUSE_S = 0.05  # a client's pace between batches: a wave takes longer than the kill's delay


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiRun(Run):
    """The API process; one kill while a client is posting, retrying each batch with its idempotency key."""

    kills, waves = 1, 3
    stop_bound_s = 30.0
    done_bound_s = 180.0  # a batch cut off mid-request waits out the claim's 30 s staleness before its retry

    def __init__(self, home: Path, run_id: str) -> None:
        super().__init__(home, 3)
        self.run_id, self.port = run_id, free_port()
        base = read_property_groups(LOCAL_PROPERTIES)
        self.groups: dict[str, dict[str, str]] = {name: dict(group) for name, group in base.items()}
        self.contracts_dir = _contracts(home / "feeds", run_id)
        self.groups["feeds"]["contracts.dir"] = str(self.contracts_dir)
        self.groups["ingest_api"].update({"keys.secret": f"medistream/ingest-api/t{run_id}", "port": str(self.port),
                                          "idempotency.table": f"ingest-idem-t{run_id}", "max.batch": str(MAX_BATCH)})
        self.feed = f"t{run_id}_{SHIPPED}"
        properties = home / "properties.json"
        properties.write_text(json.dumps([{"PropertyGroupId": k, "PropertyMap": v} for k, v in self.groups.items()]))
        self.jobs = JobProcesses(properties, home / "logs")
        self.records = [with_canary_names(g).payload
                        for g in synthetic_records(self.feed, self.waves * BATCHES_PER_WAVE * BATCH, 41)]
        self.clients: list[threading.Thread] = []
        self.accepted: dict[str, dict[str, Any]] = {}
        self.cut_off: set[str] = set()  # batches whose answer a kill cut off (or that met a stopped server)
        self.unexpected: list[tuple[str, int]] = []
        self.answers: list[str] = []  # what the server answered to the refused requests
        self.replay: tuple[int, dict[str, str], int] = (0, {}, -1)  # status, headers, messages it added
        self.second_stop = -1

    @property
    def url(self) -> str:
        """The feed's records URL."""
        return f"http://127.0.0.1:{self.port}/v1/feeds/{self.feed}/records"

    def setup(self) -> None:
        self.key = add_key(self.groups, self.feed)

    def headers(self, idempotency_key: str | None = None, media: str = "application/json") -> dict[str, str]:
        """The feed's key, a content type and an idempotency key."""
        extra = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return {"Authorization": f"Bearer {self.key}", "Content-Type": media, **extra}

    def batch(self, n: int) -> bytes:
        """Batch n's body: BATCH records as a JSON array."""
        return b"[" + b",".join(self.records[n * BATCH:(n + 1) * BATCH]) + b"]"

    def _post_until_accepted(self, n: int) -> None:
        key, body, deadline = f"batch-{n}", self.batch(n), time.monotonic() + self.done_bound_s
        while time.monotonic() < deadline:
            try:
                status, answer, _headers = post(self.url, body, self.headers(key))
            except (OSError, aiohttp.ClientError) as err:  # the server is gone (killed, restarting)
                if not isinstance(err, aiohttp.ClientConnectorError):  # it was reached: the answer was cut off
                    self.cut_off.add(key)
                time.sleep(0.3)
                continue
            if status == 202:
                self.accepted[key] = answer
                return
            if status != 409:  # 409: the claim of a request the kill cut off is not stale yet
                self.unexpected.append((key, status))
                return
            time.sleep(1)

    def offer(self, wave: int) -> None:
        def client() -> None:
            for n in range(wave * BATCHES_PER_WAVE, (wave + 1) * BATCHES_PER_WAVE):
                self._post_until_accepted(n)
                time.sleep(PAUSE_S)

        for thread in self.clients:
            thread.join(self.done_bound_s)
        self.clients.append(threading.Thread(target=client, daemon=True))
        self.clients[-1].start()

    def start(self) -> None:
        self.jobs.start("api", "serve", "--port", str(self.port))
        wait_until_serving(self.port, self.jobs.check_alive)

    def kill_delay_s(self, kill: int) -> float:
        return self.rng.uniform(0.2, 0.6)

    def kill(self) -> None:
        self.jobs.kill("api")

    def stop(self, timeout_s: float) -> int:
        return self.jobs.stop("api", timeout_s)

    @cached_property
    def topic(self) -> str:
        """The feed's raw topic."""
        return f"raw.{self.feed}"

    def raw(self) -> list[bytes]:
        """Committed values on the raw topic."""
        return [value for _key, value in topic_messages(BOOTSTRAP, self.topic)]

    def progress(self) -> int:
        return len({json.loads(v)["record_id"] for v in self.raw()})

    def total(self) -> int:
        return len(self.records)

    def visible_when_offered(self, waves: int) -> int:
        return waves * BATCHES_PER_WAVE * BATCH

    def offering(self) -> bool:
        return any(t.is_alive() for t in self.clients)

    def done(self) -> bool:
        return not any(t.is_alive() for t in self.clients) and super().done()

    def check_alive(self) -> None:
        self.jobs.check_alive()

    @cached_property
    def refused(self) -> list[bytes]:
        """Synthetic claims (never real people) the refused requests carry."""
        return [g.payload for g in self.refused_generated]

    @cached_property
    def refused_generated(self) -> list[Any]:
        """The refused requests' records, names made up (tests.integration.test_phi_outputs.canary_name)."""
        return [with_canary_names(g) for g in synthetic_records(self.feed, MAX_BATCH + 1, 42)]

    def after_stop(self) -> None:
        """Serve once more: refused requests, and a replay of batch 0 that must land nothing."""
        self.start()
        one, many = self.refused[0], b"[" + b",".join(self.refused) + b"]"
        requests = [
            (self.url, many, self.headers()),  # 413: above max.batch
            (self.url, one[:-3], self.headers()),  # 400: not JSON
            (self.url, one, self.headers("batch-0")),  # 422: batch 0's key with another body
            (self.url, one, self.headers(media="text/plain")),  # 415
            (self.url.replace(self.feed, f"{self.feed}-nope"), one, self.headers()),  # 404
            (self.url, one, {"Authorization": "Bearer msk_not-a-key", "Content-Type": "application/json"}),  # 401
        ]
        for url, body, headers in requests:
            status, answer, received = post(url, body, headers)
            self.answers.append(json.dumps({"status": status, "answer": answer, "headers": received}))
        before = len(self.raw())
        status, _answer, received = post(self.url, self.batch(0), self.headers("batch-0"))
        self.replay = (status, received, len(self.raw()) - before)
        self.second_stop = self.stop(self.stop_bound_s)

    def close(self) -> None:
        for thread in self.clients:
            thread.join(5)
        self.jobs.stop_all()


class IngestApi(Harness):
    """202 only once a batch is on raw.<feed>; a retry with its key lands nothing new. A batch the kill cut off
    between produce and receipt is produced again after its claim goes stale (connectors/ingest_api/receipts.py):
    those exact re-sends are the job's dedup to drop, so records count once per distinct content."""

    run: ApiRun

    @cached_property
    def values(self) -> list[bytes]:
        """Committed values on the raw topic, after everything."""
        return self.run.raw()

    def expected(self) -> Counter[str]:
        return Counter(json.loads(r)["record_id"] for r in self.run.records)

    def delivered(self) -> Counter[str]:
        return Counter(json.loads(v)["record_id"] for v in set(self.values))

    def error_texts(self) -> list[str]:
        return [*self.run.answers, *(p.read_text() for p in self.run.jobs.logs.glob("*.log"))]

    def refused_texts(self) -> list[str]:
        return [r.decode() for r in self.run.refused]

    def needles(self) -> Needles:
        contracts = load_contracts(self.run.contracts_dir)
        return Needles(phi_values(self.run.refused_generated, contracts))

    def checks(self) -> dict[str, bool]:
        statuses = [json.loads(a)["status"] for a in self.run.answers]
        canonical = {json.dumps(json.loads(r), sort_keys=True) for r in self.run.records}
        return {
            "every batch was answered 202 in the end": len(self.run.accepted) == len(self.run.records) // BATCH
            and not self.run.unexpected,
            "what landed is what was posted": {json.dumps(json.loads(v), sort_keys=True) for v in self.values}
            == canonical,
            "re-sends only of batches a kill cut off": len(self.values) - len(set(self.values))
            <= BATCH * len(self.run.cut_off),
            "refused requests are answered 413, 400, 422, 415, 404, 401": statuses == [413, 400, 422, 415, 404, 401],
            "a replay after the restart is answered from its receipt": self.run.replay[0] == 202
            and self.run.replay[1].get("idempotent-replayed") == "true" and self.run.replay[2] == 0,
        }
