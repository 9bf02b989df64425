"""Kinesis door throughput and latency: events/s from a 2-shard stream onto raw.<feed>, and put -> on Kafka.

    .venv/bin/python -u -m bench.kinesis_pull_bench [--events 60000] [--rate 2000] [--max-records 1000]

A run-unique 2-shard stream in the local Kinesis API, a run-unique feed, KCL application and cursor topic;
the door (`medistream kinesis-pull run`, one JVM) started and warmed up (a marker event seen on Kafka), then
`--events` device events (about 400 bytes of JSON each, 200 devices) put at `--rate` events/s in PutRecords
calls of 500, each carrying its put time. A read_committed consumer in this process times each event from
the start of its PutRecords call to its arrival (so the latency holds the put, KCL's polling interval, one
Kafka transaction and the read). Reports landed events/s over the run, latency P50/P95/P99/max, the door's
CPU seconds (the JVM's, by pid), and whether the raw topic holds every event exactly once. Everything on
127.0.0.1; the door is stopped by pid; the stream and KCL's tables are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.resources import code_version, machine_info
from bench.sink_checks import percentiles
from connectors.properties import (
    LOCAL_PROPERTIES,
    REPO_ROOT,
    load_phi_config,
    local_aws_environment,
    read_property_groups,
)
from tools.job_processes import stop_job

RESULTS = Path(__file__).resolve().parent / "results"
DEVICES = 200


class Arrivals(threading.Thread):
    """Reads raw.<feed> read_committed from the start; records each event's id and put -> arrival latency."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.latency_ms: list[float] = []
        self.ids: Counter[str] = Counter()
        self.first_arrival = self.last_arrival = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False, "isolation.level": "read_committed"})
        partitions = consumer.list_topics(self.topic, timeout=30).topics[self.topic].partitions
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        try:
            while not self.stop.is_set():
                for message in consumer.consume(1000, 0.2):
                    if message.error() or message.value() is None:
                        continue
                    now = time.time()
                    event = json.loads(message.value() or b"{}")
                    self.ids[event["event_id"]] += 1
                    if "put_ms" in event:
                        self.latency_ms.append(now * 1000 - event["put_ms"])
                        self.first_arrival = self.first_arrival or now
                        self.last_arrival = now
        finally:
            consumer.close()


def event(run_id: str, i: int, put_ms: float) -> dict[str, Any]:
    """A device event of about 400 bytes (the shape of a monitor's reading; the feed's contract is not this bench's)."""
    return {"event_id": f"{run_id}-{i}", "device_id": f"mon-{i % DEVICES:04d}", "put_ms": put_ms,
            "patient_mrn": f"MRN{(i * 7919) % 1_000_000:07d}", "event_time": datetime.now(UTC).isoformat(),
            "vitals": {"hr": 60 + i % 40, "spo2": 90 + i % 10, "resp": 12 + i % 8, "sys": 110 + i % 30,
                       "dia": 70 + i % 20, "temp_c": 36.5 + (i % 15) / 10},
            "alarms": ["SPO2_LOW"] if i % 97 == 0 else [], "firmware": "4.2.17", "ward": f"W{i % 12:02d}",
            "pad": "x" * 120}


def put_events(kinesis: Any, stream: str, run_id: str, events: int, rate: float) -> list[float]:
    """Put the events at about `rate`/s in PutRecords calls of 500, each stamped with its call's start; return the
    calls' durations in ms."""
    calls_ms = []
    started = time.time()
    for first in range(0, events, 500):
        batch_began = time.time()
        records = [{"Data": json.dumps(event(run_id, i, batch_began * 1000)).encode(),
                    "PartitionKey": f"mon-{i % DEVICES:04d}"} for i in range(first, min(first + 500, events))]
        answer = kinesis.put_records(StreamName=stream, Records=records)
        calls_ms.append((time.time() - batch_began) * 1000)
        if answer["FailedRecordCount"]:
            raise RuntimeError(f"{answer['FailedRecordCount']} records refused by PutRecords")
        time.sleep(max(0.0, started + (first + len(records)) / rate - time.time()))
    return calls_ms


def run(events: int, rate: float, max_records: int, home: Path, backlog: bool = False) -> dict[str, Any]:
    import boto3
    import psutil

    local_aws_environment()
    groups_list = json.loads(LOCAL_PROPERTIES.read_text())
    phi = load_phi_config(read_property_groups(LOCAL_PROPERTIES))
    bootstrap = next(g for g in groups_list if g["PropertyGroupId"] == "kafka")["PropertyMap"]["bootstrap.servers"]
    kinesis = boto3.client("kinesis", endpoint_url=phi.endpoint, region_name=phi.region)
    dynamodb = boto3.client("dynamodb", endpoint_url=phi.endpoint, region_name=phi.region)
    run_id = uuid.uuid4().hex[:10]
    stream, feed, app = f"bench-devices-t{run_id}", f"t{run_id}_bench_devices", f"kpb-{run_id}"
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    groups_list.append({"PropertyGroupId": "kinesis_pull", "PropertyMap": {
        "stream": stream, "feed": feed, "application": app, "cursor.topic": f"medistream.kinesis.cursors.t{run_id}",
        "transactional.id.prefix": f"kinesis-pull-bench-{run_id}", "max.records": str(max_records),
        "failover.time.ms": "5000", "shutdown.timeout.ms": "5000"}})
    props = home / "properties.json"
    props.write_text(json.dumps(groups_list))
    put_calls_ms: list[float] = []
    backlog_put_s = 0.0
    if backlog:  # every event in the stream before the door starts: how fast it drains (latency not meaningful)
        backlog_began = time.time()
        put_calls_ms = put_events(kinesis, stream, run_id, events, rate)
        backlog_put_s = time.time() - backlog_began
    log = home / "door.log"
    with log.open("wb") as out:
        argv = [sys.executable, "-m", "jobs.kinesis_pull", "--properties", str(props), "run"]
        door = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    arrivals: Arrivals | None = None
    try:
        deadline = time.monotonic() + 60
        while True:  # the door creates the topic; wait for it
            from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

            if f"raw.{feed}" in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics:
                break
            if door.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the door did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        arrivals = Arrivals(bootstrap, f"raw.{feed}")
        arrivals.start()
        warm_up = time.monotonic()
        while not arrivals.ids and not backlog:  # a marker once a second until the door lands one: leases held
            kinesis.put_record(StreamName=stream, PartitionKey="warm-up",
                               Data=json.dumps({"event_id": f"warm-up-{time.monotonic()}"}).encode())
            if door.poll() is not None or time.monotonic() - warm_up > 180:
                raise RuntimeError(f"the door landed nothing:\n{log.read_text()[-2000:]}")
            time.sleep(1)
        while backlog and not arrivals.ids and door.poll() is None and time.monotonic() - warm_up < 180:
            time.sleep(0.2)
        ready_s = time.monotonic() - warm_up
        jvm = psutil.Process(door.pid)
        cpu_before = sum(jvm.cpu_times()[:2])
        started = time.time()
        if not backlog:
            put_calls_ms = put_events(kinesis, stream, run_id, events, rate)
        put_s = time.time() - started
        deadline = time.monotonic() + 120
        while len(arrivals.latency_ms) < events and time.monotonic() < deadline and door.poll() is None:
            time.sleep(0.5)
        time.sleep(2)  # a duplicate, if any, would arrive now
        cpu_s = sum(jvm.cpu_times()[:2]) - cpu_before
        landed_s = arrivals.last_arrival - (arrivals.first_arrival if backlog else started)
        bench_ids = {k: v for k, v in arrivals.ids.items() if k.startswith(run_id)}
        return {
            "events": events, "offered_per_s": rate, "max_records": max_records, "shards": 2,
            "event_bytes": len(json.dumps(event(run_id, 0, 0.0))), "door_ready_s": round(ready_s, 1),
            "backlog": backlog, "put_s": round(backlog_put_s if backlog else put_s, 2),
            "put_per_s": round(events / (backlog_put_s if backlog else put_s), 1),
            "put_call_ms": percentiles(put_calls_ms),
            "landed": sum(bench_ids.values()), "distinct": len(bench_ids),
            "duplicates": sum(v - 1 for v in bench_ids.values() if v > 1),
            "landed_per_s": round(len(bench_ids) / landed_s, 1) if landed_s > 0 else None,
            "latency_ms": None if backlog else {**percentiles(arrivals.latency_ms),
                                                "max": round(max(arrivals.latency_ms, default=0), 1)},
            "door_cpu_s": round(cpu_s, 2),
            "events_per_door_cpu_s": round(len(bench_ids) / cpu_s, 1) if cpu_s else None,
            "load_average": os.getloadavg(),
        }
    finally:
        if arrivals is not None:
            arrivals.stop.set()
        stop_job(door, timeout_s=30)  # SIGTERM, SIGKILL after 30 s
        kinesis.delete_stream(StreamName=stream)
        for table in dynamodb.list_tables()["TableNames"]:
            if table.startswith(app):
                dynamodb.delete_table(TableName=table)
        from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

        admin = AdminClient({"bootstrap.servers": bootstrap})
        mine = [t for t in (f"raw.{feed}", f"medistream.kinesis.cursors.t{run_id}")
                if t in admin.list_topics(timeout=10).topics]
        for future in (admin.delete_topics(mine, operation_timeout=30).values() if mine else []):
            future.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kinesis_pull_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s offered")
    parser.add_argument("--max-records", type=int, default=1000, help="kinesis_pull.max.records (per GetRecords)")
    parser.add_argument("--backlog", action="store_true",
                        help="put every event before the door starts; measure how fast it drains them")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kinesis-pull-bench-") as tmp:
        case = run(args.events, args.rate, args.max_records, Path(tmp), args.backlog)
    lat = case["latency_ms"] or {}
    print(f"{case['landed_per_s']} events/s landed ({case['put_per_s']} put/s, offered {args.rate:.0f}); "
          "put -> on Kafka "
          f"P50 {lat.get('p50')} ms P95 {lat.get('p95')} ms P99 {lat.get('p99')} ms max {lat.get('max')} ms; "
          f"{case['distinct']}/{args.events} events, {case['duplicates']} duplicates; door CPU {case['door_cpu_s']} s")
    result = {"bench": "kinesis_pull", "at": datetime.now(UTC).isoformat(timespec="seconds"), "case": case,
              "machine": machine_info(), "code": code_version()}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"kinesis-pull-{datetime.now(UTC):%Y-%m-%d}{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"== written {out}")
    return 0 if case["distinct"] == args.events and case["duplicates"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
