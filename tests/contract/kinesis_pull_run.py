"""The Kinesis door's run (as tests/integration/test_kinesis_pull.py sets it up): a 2-shard stream in the local
Kinesis API, generated device events put in waves while `medistream kinesis-pull run` lands them on raw.<feed>,
the door SIGKILLed mid-stream and restarted under the same worker id, then SIGTERMed.

The door refuses nothing (it lands each record's bytes as put; the ingest job judges them), so the PHI scan's
"refused records" are every event it carried: its log must hold none of their MRNs or device ids."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from connectors.properties import (
    LOCAL_PROPERTIES,
    REPO_ROOT,
    load_phi_config,
    local_aws_environment,
    read_property_groups,
)
from infra.local.device_events import DeviceEvent, generate_device_events, put_to_kinesis
from tests.contract.base import Harness, Run, wait_until
from tests.integration.conftest import read_topic
from tools.checks.leak_scan import Needles
from tools.job_processes import stop_job

WAVE, DEVICES = 400, 16


class KinesisPullRun(Run):
    """Three waves of device events on a 2-shard stream; the door killed once it landed some of the second."""

    waves = 3
    done_bound_s = 240.0
    stop_bound_s = 60.0

    def __init__(self, home: Path, run_id: str) -> None:
        import boto3

        super().__init__(home, 41)
        home.mkdir(parents=True, exist_ok=True)
        local_aws_environment()
        phi = load_phi_config(read_property_groups(LOCAL_PROPERTIES))
        self.kinesis = boto3.client("kinesis", endpoint_url=phi.endpoint, region_name=phi.region)
        self.dynamodb = boto3.client("dynamodb", endpoint_url=phi.endpoint, region_name=phi.region)
        self.home, self.run_id = home, run_id
        self.stream, self.feed, self.application = f"devices-c{run_id}", f"c{run_id}_devices", f"kpc-{run_id}"
        groups = json.loads(LOCAL_PROPERTIES.read_text())
        self.bootstrap = next(g for g in groups if g["PropertyGroupId"] == "kafka")["PropertyMap"]["bootstrap.servers"]
        groups.append({"PropertyGroupId": "kinesis_pull", "PropertyMap": {
            "stream": self.stream, "feed": self.feed, "application": self.application,
            "cursor.topic": f"medistream.kinesis.cursors.c{run_id}", "transactional.id.prefix": f"kpc-{run_id}",
            "max.records": "100", "failover.time.ms": "5000", "worker.id": f"{self.application}-worker",
            "shutdown.timeout.ms": "5000", "heap": "256m"}})
        self.properties = home / "kinesis_pull.json"
        self.properties.write_text(json.dumps(groups))
        self.log = home / "kinesis_pull.log"
        self.events = generate_device_events(self.waves * WAVE, seed=41, devices=DEVICES, feed=self.feed)
        self.proc: subprocess.Popen[bytes] | None = None
        self.putters: list[threading.Thread] = []
        self.final: list[Any] = []  # raw.<feed> after the stop

    def setup(self) -> None:
        self.kinesis.create_stream(StreamName=self.stream, ShardCount=2)
        self.kinesis.get_waiter("stream_exists").wait(StreamName=self.stream, WaiterConfig={"Delay": 1,
                                                                                            "MaxAttempts": 30})

    def offer(self, wave: int) -> None:
        """Put the wave at 100 events/s in a thread of its own: the devices keep sending while the door is killed."""
        for thread in self.putters:
            thread.join(120)
        chunk = self.events[wave * WAVE:(wave + 1) * WAVE]
        self.putters.append(threading.Thread(target=put_to_kinesis, args=(self.kinesis, self.stream, chunk),
                                             kwargs={"per_second": 100, "batch": 25}, daemon=True))
        self.putters[-1].start()

    def offering(self) -> bool:
        return any(t.is_alive() for t in self.putters)

    def done(self) -> bool:
        return not self.offering() and super().done()

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # our own module, fixed argv; the process execs the JVM (same pid)
                [sys.executable, "-m", "jobs.kinesis_pull", "--properties", str(self.properties), "run"],
                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)

    def kill_point(self, kill: int) -> None:
        wait_until(lambda: self.progress() >= WAVE // 2, 240, "the door to land events", self.check_alive)

    def kill_delay_s(self, kill: int) -> float:
        return 1.5  # the second wave is being put (4 s of it) and landed: a batch is in flight

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout_s: float) -> int:
        assert self.proc is not None
        return stop_job(self.proc, timeout_s=timeout_s)

    def landed(self) -> list[Any]:
        """Committed messages on raw.<feed> (read_committed)."""
        return read_topic(self.bootstrap, f"raw.{self.feed}")

    def progress(self) -> int:
        return len(self.landed())

    def after_stop(self) -> None:
        """Read the raw topic once the door stopped: close() deletes the run's topics and stream."""
        self.final = self.landed()

    def total(self) -> int:
        return len(self.events)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the door exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")

    def close(self) -> None:
        from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

        for thread in self.putters:
            thread.join(120)
        if self.proc is not None and self.proc.poll() is None:
            stop_job(self.proc, timeout_s=30)
        try:
            self.kinesis.delete_stream(StreamName=self.stream)
        except self.kinesis.exceptions.ResourceNotFoundException:
            pass
        for table in self.dynamodb.list_tables()["TableNames"]:
            if table.startswith(self.application):
                self.dynamodb.delete_table(TableName=table)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        mine = [t for t in (f"raw.{self.feed}", f"medistream.kinesis.cursors.c{self.run_id}")
                if t in admin.list_topics(timeout=10).topics]
        for future in (admin.delete_topics(mine, operation_timeout=30).values() if mine else []):
            future.result()


class KinesisPull(Harness):
    """Each Kinesis record once on raw.<feed> (a producer's re-send is a record of its own), keyed by its device."""

    run: KinesisPullRun

    @property
    def messages(self) -> list[Any]:
        return self.run.final

    def expected(self) -> Counter[str]:
        return Counter(e.record_id for e in self.run.events)

    def delivered(self) -> Counter[str]:
        return Counter(orjson.loads(m.value())["record_id"] for m in self.messages)

    def error_texts(self) -> list[str]:
        return [self.run.log.read_text(errors="replace")]

    def refused_texts(self) -> list[str]:
        return [e.payload.decode() for e in self.run.events]

    def needles(self) -> Needles:
        return Needles(sorted({v for e in self.run.events for v in _identifiers(e)}))

    def checks(self) -> dict[str, bool]:
        partitions: dict[bytes, set[int]] = {}
        order: dict[bytes, list[tuple[int, int]]] = {}
        position = {id(e): i for i, e in enumerate(self.run.events)}
        first_index: dict[str, int] = {}
        for e in self.run.events:
            first_index.setdefault(e.record_id, position[id(e)])
        for m in self.messages:
            partitions.setdefault(m.key(), set()).add(m.partition())
            order.setdefault(m.key(), []).append((m.offset(), first_index[orjson.loads(m.value())["record_id"]]))
        in_put_order = all([i for _o, i in sorted(seen)] == sorted(i for _o, i in seen) for seen in order.values())
        return {"each device's events on one partition": all(len(p) == 1 for p in partitions.values()),
                "each device's events in put order": in_put_order,
                "the Kafka key is the device": {m.key().decode() for m in self.messages}
                == {e.device_id for e in self.run.events}}


def _identifiers(event: DeviceEvent) -> tuple[str, str]:
    record = orjson.loads(event.payload)
    return record["patient"]["mrn"], record["device"]["device_id"]
