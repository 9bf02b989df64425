"""Device events end to end: Kinesis put -> queryable in Iceberg, through the Kinesis door and the ingest job.

    .venv/bin/python -u -m bench.device_events_bench [--rate 1000] [--seconds 90] [--checkpoint-ms 2000]

A run of its own (bench.latency_bench.isolated_run: its feeds, topics, tables and checkpoints), a run-unique
2-shard stream in the local Kinesis API and KCL application; the ingest job and the Kinesis door
(`medistream kinesis-pull run`) started and warm (a first checkpoint, and a first batch of events landed in
Iceberg), then `--rate` x `--seconds` generated device events (infra/local/device_events.py: 5 % out of order,
2 % allowed-late, 2 % late, 1 % skewed clocks, 1 % re-sent, 1 % invalid) put in PutRecords calls of 500, each
event's put time being the start of its call. Once every landed reading is committed: for each the commit time of
the Iceberg snapshot whose data file holds it (event -> queryable), the counts of the Iceberg table, the
operational store and the dead letters by reason against the ground truth, and the CPU seconds of the job and
the door (their process trees) for events per CPU-second. Writes bench/results/device-events-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.latency_bench import isolated_run, wait_first_checkpoint, with_checkpoint_interval
from bench.resources import code_version, machine_info
from bench.sink_checks import percentiles
from connectors.properties import REPO_ROOT, local_aws_environment

RESULTS = Path(__file__).resolve().parent / "results"


def commits_of(table: Any) -> dict[str, int]:
    """Record id -> commit time (epoch ms) of the snapshot whose data file holds it."""
    import pyarrow.parquet as pq

    table.refresh()
    commits = {s.snapshot_id: s.timestamp_ms for s in table.snapshots()}
    found: dict[str, int] = {}
    for entry in table.inspect.entries().to_pylist():
        if entry["status"] != 1:  # 1 = ADDED in the snapshot the entry names
            continue
        with table.io.new_input(entry["data_file"]["file_path"]).open() as stream:
            ids = pq.read_table(stream, columns=["record_id"]).column("record_id").to_pylist()
        for record_id in ids:
            found[record_id] = commits[entry["snapshot_id"]]
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their descendants so far."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def main() -> None:
    """Run the device-event benchmark once and record its result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second put on the stream")
    parser.add_argument("--seconds", type=float, default=90.0, help="how long events are put")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--batch", type=int, default=500, help="events per PutRecords call (Kinesis allows 500)")
    parser.add_argument("--checkpoint-ms", type=int, default=2000)
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--name", default="", help="suffix of the results file (device-events-<date><name>.json)")
    args = parser.parse_args()

    local_aws_environment()
    from connectors.kms import aws_client
    from infra.local.device_events import FEED, generate_device_events, put_to_kinesis
    from infra.local.ground_truth import device_outcome
    from schemas.contracts import load_contracts
    from tools.job_processes import JobProcesses, stop_job
    from tools.readback import (
        committed_dead_letters,
        dead_letter_key,
        iceberg_column,
        iceberg_table,
        linkage_digest,
    )

    run_id, workdir, cfg, properties = isolated_run("device-events")
    with_checkpoint_interval(properties, args.checkpoint_ms)
    feed = f"t{run_id}_{FEED}"
    stream, application = f"bench-devices-e{run_id}", f"dev-bench-{run_id}"
    groups = json.loads(properties.read_text())
    groups = [g for g in groups if g["PropertyGroupId"] != "kinesis_pull"]
    groups.append({"PropertyGroupId": "kinesis_pull", "PropertyMap": {
        "stream": stream, "feed": feed, "application": application,
        "cursor.topic": f"medistream.kinesis.cursors.e{run_id}", "transactional.id.prefix": f"dev-bench-{run_id}",
        "max.records": "1000", "worker.id": f"{application}-worker",
        "shutdown.timeout.ms": "5000", "heap": "384m"}})
    properties.write_text(json.dumps(groups))
    contract = load_contracts(Path(cfg.feeds.contracts_dir))[feed]
    kinesis = aws_client(cfg.phi, "kinesis")
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    total = int(args.rate * args.seconds)
    warm = generate_device_events(200, seed=1, devices=20, feed=feed)
    events = generate_device_events(total, seed=17, devices=args.devices, feed=feed)
    truth = device_outcome(events, contract, linkage_digest(cfg))
    whole = device_outcome([*warm, *events], contract, linkage_digest(cfg))  # what the run's tables hold at the end
    landed_ids = {e.record_id for e in events if e.expect == "land"}

    os.environ["MEDISTREAM_PROPERTIES"] = str(properties)
    jobs = JobProcesses(properties, workdir / "logs")
    door_log = workdir / "logs" / "kinesis_pull.log"
    door_log.parent.mkdir(parents=True, exist_ok=True)
    door = None
    try:
        jobs.start("ingest")
        with door_log.open("ab") as log:
            door = subprocess.Popen([sys.executable, "-m", "jobs.kinesis_pull", "--properties", str(properties), "run"],
                                    cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_first_checkpoint(jobs, cfg.checkpoints)
        put_to_kinesis(kinesis, stream, warm)
        table_name = "device_events"
        deadline = time.monotonic() + 400
        while sum(iceberg_column(cfg, table_name, "record_id").values()) < sum(e.expect == "land" for e in warm):
            jobs.check_alive()
            if door.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"warm-up events never reached Iceberg; see {workdir / 'logs'}")
            time.sleep(2)
        pids = [*(p.pid for p in jobs.procs.values()), door.pid]
        cpu_before, started = cpu_seconds(pids), time.monotonic()
        put_at: dict[str, float] = {}
        for record_id, at in put_to_kinesis(kinesis, stream, events, per_second=args.rate, batch=args.batch):
            put_at.setdefault(record_id, at)  # a re-sent event's first put is the one that lands
        put_s = time.monotonic() - started
        deadline = time.monotonic() + args.drain_timeout
        while True:
            jobs.check_alive()
            held = landed_ids & set(iceberg_column(cfg, table_name, "record_id"))
            if len(held) >= len(landed_ids) or time.monotonic() > deadline:
                break
            time.sleep(2)
        drained_s = time.monotonic() - started
        cpu_used = cpu_seconds(pids) - cpu_before
        time.sleep(args.checkpoint_ms / 1000 * 3)  # the dead letters' and the store's writes of the same checkpoints
        visible = commits_of(iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.table(table_name)))
        keys = iceberg_column(cfg, table_name, "business_key")
        letters = [letter for letter in committed_dead_letters(cfg.kafka.bootstrap_servers, cfg.kafka.dlq_topic)
                   if letter.get("feed") == feed]
        from connectors.operational import current_keys

        stored = current_keys(cfg, [feed])["device_event"]
    finally:
        if door is not None:
            stop_job(door, timeout_s=30)
        jobs.stop_all()
        os.environ.pop("MEDISTREAM_PROPERTIES", None)
        kinesis.delete_stream(StreamName=stream)
        dynamodb = aws_client(cfg.phi, "dynamodb")  # KCL's lease, coordinator and metrics tables of the run
        for table in dynamodb.list_tables()["TableNames"]:
            if table.startswith(application):
                dynamodb.delete_table(TableName=table)

    latency = [float(visible[rid] - at * 1000) for rid, at in put_at.items() if rid in landed_ids and rid in visible]
    want_keys = truth["archived"]
    mine = {dead_letter_key(letter): letter["reason_code"] for letter in letters}
    reasons = Counter(mine[k] for k in truth["dead_letters"] if k in mine)
    result = {
        "benchmark": "device-events", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
        "code": code_version(), "offered_events_per_s": args.rate, "events": total, "devices": args.devices,
        "checkpoint_interval_ms": args.checkpoint_ms,
        "put_for_s": round(put_s, 1), "put_achieved_per_s": round(total / put_s, 1),
        "drained_in_s": round(drained_s, 1), "landed_readings_per_s": round(len(landed_ids) / drained_s, 1),
        "cpu_seconds_job_and_door": round(cpu_used, 1),
        "events_per_cpu_second": round(total / cpu_used, 1) if cpu_used else None,
        "event_put_to_queryable_ms": percentiles(latency, (50, 95, 99)) | {"max": max(latency, default=0.0),
                                                                           "n": len(latency)},
        "ground_truth": {"landing": sum(want_keys.values()), "resends_dropped": truth["resends_dropped"],
                         "dead_letters": dict(truth["dead_letter_reasons"]),
                         "devices_in_store": sum(truth["routed"]["operational:device_event"].values())},
        # Exact: the run's table, dead letters and store rows (warm-up events included) equal the ground truth's.
        "held": {"iceberg_rows_of_run": sum(keys[k] for k in want_keys),
                 "iceberg_exact": keys == whole["routed"]["iceberg:device_event"],
                 "dead_letters": dict(reasons),
                 "dead_letters_exact": Counter(mine.keys()) == whole["dead_letters"]
                 and Counter(mine.values()) == whole["dead_letter_reasons"],
                 "store_exact": stored == whole["routed"]["operational:device_event"]},
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"device-events-{result['date']}{args.name}.json"
    out.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
