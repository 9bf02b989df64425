"""End-to-end latency: from a record's produce to raw.<feed> until it is queryable in Iceberg and in the
Snowflake channel (emulator), at a steady offered rate.

    python -m bench.latency_bench [--rate 5000] [--seconds 60] [--size-kb 4] [--checkpoint-ms 5000]
                                  [--warmup-s 0] [--slice-s 15]

The ingest job and the Snowflake loader run as they do in production (own processes, exactly-once
sinks); the producer paces Kafka records at `--rate` and notes each record's send time. Afterwards:
- Iceberg: a row becomes queryable when the snapshot that added its data file commits; the
  snapshot's commit time is read from table metadata, the file's record ids from the file itself.
- Snowflake: a row is queryable when its channel append commits (LOADED_AT_MS in the emulator).
Prints P50/P95/P99 per destination over every record, over those sent after `--warmup-s` (start-up's
backlog left out) and per `--slice-s` of send time (settling, or growing: the rate is above what the job
sustains), the rate the pipeline sustained (records/s and per core), and writes
bench/results/latency-<date>-<rate>rps.json. Needs the local stack (`./medistream stack up`).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results"


def percentiles(values_ms: list[float]) -> dict[str, float]:
    """P50/P95/P99 and max in seconds."""
    if len(values_ms) < 2:
        return {}
    cuts = statistics.quantiles(values_ms, n=100, method="inclusive")
    return {"p50_s": round(cuts[49] / 1000, 2), "p95_s": round(cuts[94] / 1000, 2),
            "p99_s": round(cuts[98] / 1000, 2), "max_s": round(max(values_ms) / 1000, 2)}


def latency_by_slice(sent: dict[str, int], visible: dict[str, int], slice_s: float) -> list[dict[str, Any]]:
    """Latency percentiles per slice of send time, the first slice starting at the first send.

    A backlog left by start-up (the JIT, the first checkpoints) shows as early slices slower than the later ones,
    which settle; an offered rate above what the job sustains shows as slices that keep getting slower.
    """
    if not sent:
        return []
    first_ms = min(sent.values())
    slices: dict[int, list[float]] = {}
    for record_id, sent_ms in sent.items():
        if record_id in visible:
            slices.setdefault(int((sent_ms - first_ms) / 1000 // slice_s), []).append(visible[record_id] - sent_ms)
    return [{"from_s": k * slice_s, "to_s": (k + 1) * slice_s, "records": len(values), **percentiles(values)}
            for k, values in sorted(slices.items())]


def after_warmup(sent: dict[str, int], warmup_s: float) -> dict[str, int]:
    """The records sent once `warmup_s` seconds had passed since the first send (all of them for 0)."""
    if not sent or warmup_s <= 0:
        return dict(sent)
    cut = min(sent.values()) + warmup_s * 1000
    return {record_id: sent_ms for record_id, sent_ms in sent.items() if sent_ms >= cut}


def paced_produce(records: list[Any], bootstrap: str, rate: float) -> dict[str, int]:
    """Send each record to raw.<feed> at `rate` per second; return record id -> send time (epoch ms)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, "queue.buffering.max.messages": 200_000})
    sent: dict[str, int] = {}
    start = time.monotonic()
    for index, g in enumerate(records):
        due = start + index / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        while True:
            try:
                producer.produce(f"raw.{g.feed}", key=g.record_id.encode(), value=g.payload)
                break
            except BufferError:
                producer.poll(0.05)
        sent[g.record_id] = int(time.time() * 1000)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("the producer could not deliver every record within 120 s")
    return sent


def iceberg_visible(table: Any) -> dict[str, int]:
    """Record id -> commit time (epoch ms) of the snapshot whose data file holds it."""
    import pyarrow.parquet as pq

    commits = {s.snapshot_id: s.timestamp_ms for s in table.snapshots()}
    entries = table.inspect.entries().to_pylist()
    visible: dict[str, int] = {}
    for entry in entries:
        if entry["status"] != 1:  # 1 = ADDED in the snapshot named by the entry
            continue
        path = entry["data_file"]["file_path"]
        with table.io.new_input(path).open() as stream:
            ids = pq.read_table(stream, columns=["record_id"]).column("record_id").to_pylist()
        for record_id in ids:
            visible[record_id] = commits[entry["snapshot_id"]]
    return visible


def committed_rows(table: Any) -> int:
    """Rows in the table's current snapshot, from its summary (no data read)."""
    table.refresh()
    snapshot = table.current_snapshot()
    return int(snapshot.summary["total-records"]) if snapshot and snapshot.summary else 0


def emulator_count(path: Path) -> int:
    """Committed rows in the Snowflake emulator."""
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM RECORDS").fetchone()[0])


def emulator_visible(path: Path) -> dict[str, int]:
    """Record id -> LOADED_AT_MS of the Snowflake emulator's committed rows."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT RECORD_ID, LOADED_AT_MS FROM RECORDS"))


def isolated_run(name: str) -> tuple[str, Path, Any, Path]:
    """A run of its own: its id, its folder (.local/bench/<name>-<id>), its isolated config and properties file."""
    from connectors.properties import medistream_home
    from infra.local.isolation import isolated_config, write_properties

    run_id = uuid.uuid4().hex[:8]
    workdir = medistream_home().resolve() / "bench" / f"{name}-{run_id}"
    return run_id, workdir, isolated_config(run_id, workdir), write_properties(run_id, workdir)


def with_checkpoint_interval(properties: Path, interval_ms: int) -> None:
    """Rewrite a run's properties file with another checkpoint interval."""
    groups = json.loads(properties.read_text())
    for group in groups:
        if group["PropertyGroupId"] == "checkpoints":
            group["PropertyMap"]["interval.ms"] = str(interval_ms)
    properties.write_text(json.dumps(groups))


def wait_first_checkpoint(jobs: Any, checkpoints: Any, timeout_s: float = 300.0) -> None:
    """Return once the started job has completed a checkpoint (it runs and is warm)."""
    from jobs.runtime import latest_restore_point

    deadline = time.monotonic() + timeout_s
    while latest_restore_point(checkpoints) is None:
        jobs.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no first checkpoint within {timeout_s:.0f} s")
        time.sleep(1)


def main() -> None:
    """Run the latency benchmark once and record its result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="records per second offered")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--size-kb", type=float, default=4.0)
    parser.add_argument("--checkpoint-ms", type=int, default=5000)
    parser.add_argument("--drain-timeout", type=float, default=900.0)
    parser.add_argument("--warmup-s", type=float, default=0.0,
                        help="also report the latency of the records sent after the first N seconds (default 0)")
    parser.add_argument("--slice-s", type=float, default=15.0, help="send-time slices of the per-slice table")
    args = parser.parse_args()
    if args.warmup_s < 0 or args.warmup_s >= args.seconds or args.slice_s <= 0:
        parser.error("--warmup-s must be 0 or more and below --seconds; --slice-s above 0")

    from bench.resources import machine_info
    from connectors.properties import local_aws_environment

    local_aws_environment()
    from infra.local import synthetic
    from infra.local.reference import publish_reference
    from schemas.contracts import load_contracts
    from tools.job_processes import JobProcesses
    from tools.readback import iceberg_table, s3_client, split_s3_url

    _run_id, workdir, cfg, properties = isolated_run("latency")
    with_checkpoint_interval(properties, args.checkpoint_ms)
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    # Canonical JSON feeds on Kafka: their wire form is the generated payload as is.
    feeds = [f for f in synthetic.feeds_from_contracts(contracts.values())
             if f.transport == "kafka" and contracts[f.name].format == "json"]
    total = int(args.rate * args.seconds)
    records = [g for g in synthetic.generate(total, seed=7, feeds=feeds, mix=synthetic.Mix(0.7, 0.3, 0.0),
                                             duplicate_rate=0.0, invalid_rate=0.0,
                                             size_kb=(args.size_kb, args.size_kb))]
    s3 = s3_client(cfg.s3)
    bucket, prefix = split_s3_url(cfg.reference.path)
    publish_reference(s3, bucket, prefix, 7, version=1)
    from connectors.kafka import create_missing_topics

    create_missing_topics(cfg.kafka.bootstrap_servers, {f"raw.{g.feed}" for g in records})
    os.environ["MEDISTREAM_PROPERTIES"] = str(properties)
    jobs = JobProcesses(properties, workdir / "logs")
    jobs.start("ingest")
    jobs.start("loader")
    try:
        wait_first_checkpoint(jobs, cfg.checkpoints)
        started = time.monotonic()
        sent = paced_produce(records, cfg.kafka.bootstrap_servers, args.rate)
        offered_s = time.monotonic() - started
        by_type = {"claim": "claims", "payment": "payments", "eligibility": "eligibility"}
        wanted_types = {g.record_type for g in records}
        deadline = time.monotonic() + args.drain_timeout
        tables = [iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.table(by_type[kind])) for kind in wanted_types]
        while True:  # cheap progress checks (snapshot summaries, a COUNT); the per-record pass comes after
            jobs.check_alive()
            in_iceberg = sum(committed_rows(table) for table in tables)
            in_snowflake = emulator_count(workdir / "snowflake.sqlite")
            if (in_iceberg >= len(sent) and in_snowflake >= len(sent)) or time.monotonic() > deadline:
                break
            time.sleep(5)
        iceberg: dict[str, int] = {}
        for kind in wanted_types:
            iceberg |= iceberg_visible(iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.table(by_type[kind])))
        snowflake = emulator_visible(workdir / "snowflake.sqlite")
    finally:
        jobs.stop_all()
        os.environ.pop("MEDISTREAM_PROPERTIES", None)

    def latencies(visible: dict[str, int], of: dict[str, int] = sent) -> list[float]:
        return [visible[r] - t for r, t in of.items() if r in visible]

    steady = after_warmup(sent, args.warmup_s)

    def destination(visible: dict[str, int]) -> dict[str, Any]:
        return {"visible": len(visible), **percentiles(latencies(visible)),
                "after_warmup": {"records": len(steady), **percentiles(latencies(visible, steady))},
                "by_slice": latency_by_slice(sent, visible, args.slice_s)}

    done_ms = max([*iceberg.values(), 0])
    first_ms = min(sent.values())
    sustained = len(iceberg) / max((done_ms - first_ms) / 1000, 1e-9)
    result = {
        "benchmark": "latency", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
        "offered_rate": args.rate, "offered_for_s": round(offered_s, 1), "records": len(sent),
        "record_kb": args.size_kb, "checkpoint_interval_ms": args.checkpoint_ms,
        "producer_achieved_rate": round(len(sent) / offered_s, 1),
        "warmup_s": args.warmup_s, "slice_s": args.slice_s,
        "iceberg": destination(iceberg),
        "snowflake_emulator": destination(snowflake),
        "sustained_records_per_s": round(sustained, 1),
        "sustained_records_per_s_per_core": round(sustained / (os.cpu_count() or 1), 1),
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    RESULTS.mkdir(exist_ok=True)
    for name in ("iceberg", "snowflake_emulator"):
        print(f"{name}: P95 by {args.slice_s:g} s of send time: "
              + ", ".join(f"{row.get('p95_s', '-')} s" for row in result[name]["by_slice"]))
    out = RESULTS / f"latency-{result['date']}-{int(args.rate)}rps.json"
    out.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
