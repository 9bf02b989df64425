"""Backfill speed with the live job's latency alongside: what a backfill costs the records arriving meanwhile.

    python -m bench.backfill_bench [--history 3000] [--live-rate 40] [--seconds 60] [--backfill-rate 150]

The ingest job runs as in production (its own process, exactly-once sinks). First `--history` records
are delivered (the range to backfill). Then live records are offered at `--live-rate` for `--seconds`,
twice: once alone (baseline), once while `medistream backfill` re-reads the whole history at
`--backfill-rate` units a second. Reported: the backfill's copy rate, how long the job took to read
every copy (its committed Kafka offsets reach the end), the live records' latency to Iceberg (P50/P95,
produce -> snapshot commit) in both phases, and that the history is still held once. Writes
bench/results/backfill-<date>.json. Needs the local stack (`./medistream stack up`).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench.latency_bench import RESULTS, committed_rows, iceberg_visible, isolated_run, paced_produce, percentiles


def committed_offsets_reach_end(bootstrap: str, group: str, topics: set[str]) -> bool:
    """Whether the job's consumer group has committed every partition's end offset (it read everything)."""
    from confluent_kafka import Consumer, TopicPartition

    from connectors.kafka import watermark_offsets

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    try:
        partitions = [TopicPartition(t, p) for t in sorted(topics)
                      for p in consumer.list_topics(t, timeout=10).topics[t].partitions]
        committed = consumer.committed(partitions, timeout=10)
        for tp in committed:
            _low, high = watermark_offsets(consumer, TopicPartition(tp.topic, tp.partition), 10)
            # Read committed: the end may be a transaction marker the job never sees (at most one per partition).
            if tp.offset < high - 1:
                return False
        return True
    finally:
        consumer.close()


def main() -> None:
    """Run the backfill benchmark once and record its result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=3000, help="records delivered before, then backfilled")
    parser.add_argument("--live-rate", type=float, default=40.0, help="live records per second, both phases")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each live phase")
    parser.add_argument("--backfill-rate", type=float, default=150.0, help="backfill units per second")
    parser.add_argument("--size-kb", type=float, default=4.0)
    args = parser.parse_args()

    from bench.resources import machine_info
    from connectors.properties import load_ingest_config, local_aws_environment, read_property_groups

    local_aws_environment()
    from connectors.kafka import create_missing_topics
    from infra.local import synthetic
    from infra.local.reference import publish_reference
    from jobs.runtime import latest_restore_point
    from schemas.contracts import load_contracts
    from tools.backfill import Range, run_backfill
    from tools.job_control import Operator
    from tools.job_processes import JobProcesses
    from tools.readback import iceberg_claim_ids, iceberg_table, s3_client, split_s3_url

    run_id, workdir, cfg, properties = isolated_run("backfill")
    documents = orjson.loads(properties.read_bytes())
    for group in documents:  # the run's own audit chain, not the local stack's shared one
        if group["PropertyGroupId"] == "audit":
            group["PropertyMap"]["chain"] = f"bench-backfill-{run_id}"
    properties.write_bytes(orjson.dumps(documents))
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    feeds = [f for f in synthetic.feeds_from_contracts(contracts.values())
             if f.transport == "kafka" and contracts[f.name].format == "json"]
    live_total = int(args.live_rate * args.seconds)
    records = list(synthetic.generate(args.history + 2 * live_total, seed=11, feeds=feeds,
                                      mix=synthetic.Mix(1.0, 0.0, 0.0) if all(f.record_type == "claim" for f in feeds)
                                      else synthetic.Mix(0.7, 0.3, 0.0),
                                      duplicate_rate=0.0, invalid_rate=0.0, size_kb=(args.size_kb, args.size_kb)))
    history, baseline, during = (records[:args.history], records[args.history:args.history + live_total],
                                 records[args.history + live_total:])
    s3 = s3_client(cfg.s3)
    bucket, prefix = split_s3_url(cfg.reference.path)
    publish_reference(s3, bucket, prefix, 11, version=1, all_payers=True)
    topics = {f"raw.{g.feed}" for g in records}
    create_missing_topics(cfg.kafka.bootstrap_servers, topics)
    by_type = {"claim": "claims", "payment": "payments", "eligibility": "eligibility"}
    kinds = {g.record_type for g in records}
    tables: list[Any] = []  # loaded once the job has created them

    def wait_rows(count: int, what: str, timeout_s: float = 900) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(committed_rows(t) for t in tables) < count:
            jobs.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not in Iceberg within {timeout_s:.0f} s")
            time.sleep(2)

    os.environ["MEDISTREAM_PROPERTIES"] = str(properties)
    jobs = JobProcesses(properties, workdir / "logs")
    jobs.start("ingest")
    backfill: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 300
        while latest_restore_point(cfg.checkpoints) is None:
            jobs.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("no first checkpoint within 300 s")
            time.sleep(1)
        tables.extend(iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.table(by_type[kind])) for kind in kinds)
        start_ms = int(time.time() * 1000) - 1000
        paced_produce(history, cfg.kafka.bootstrap_servers, 2000.0)
        wait_rows(len(history), "the history")
        time.sleep(2)
        end_ms = int(time.time() * 1000)

        sent_baseline = paced_produce(baseline, cfg.kafka.bootstrap_servers, args.live_rate)
        wait_rows(len(history) + len(baseline), "the baseline phase")

        groups = read_property_groups(properties)
        ingest_cfg = load_ingest_config(groups)
        operator = Operator("bench", "operator", "backfill benchmark")
        history_feeds = sorted({g.feed for g in history})

        def run() -> None:
            started = time.monotonic()
            summaries = [run_backfill(ingest_cfg, groups, operator, Range(feed, start_ms, end_ms),
                                      args.backfill_rate, dry_run=False) for feed in history_feeds]
            backfill["copy_seconds"] = time.monotonic() - started
            backfill["units"] = sum(s["messages"] + s["files"] for s in summaries)

        thread = threading.Thread(target=run, name="backfill")
        backfill_started = time.monotonic()
        thread.start()
        sent_during = paced_produce(during, cfg.kafka.bootstrap_servers, args.live_rate)
        thread.join()
        while not committed_offsets_reach_end(cfg.kafka.bootstrap_servers, cfg.kafka.group_id, topics):
            jobs.check_alive()
            if time.monotonic() - backfill_started > 900:
                raise TimeoutError("the job did not read every copy within 900 s")
            time.sleep(1)
        backfill["read_seconds"] = time.monotonic() - backfill_started
        wait_rows(len(records), "the live phase during the backfill")
        time.sleep(6)  # a checkpoint more: anything the backfill would wrongly deliver would show now
        visible: dict[str, int] = {}
        for table in tables:
            visible |= iceberg_visible(table)
        held = sum(committed_rows(t) for t in tables)
        claims_held = iceberg_claim_ids(cfg)
    finally:
        jobs.stop_all()
        os.environ.pop("MEDISTREAM_PROPERTIES", None)

    def latencies(sent: dict[str, int]) -> list[float]:
        return [visible[r] - t for r, t in sent.items() if r in visible]

    result = {
        "benchmark": "backfill", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
        "load_average": os.getloadavg(), "record_kb": args.size_kb,
        "history_records": len(history), "live_rate": args.live_rate, "live_seconds": args.seconds,
        "backfill": {"rate_limit_units_per_s": args.backfill_rate, "units": backfill["units"],
                     "copied_per_s": round(backfill["units"] / backfill["copy_seconds"], 1),
                     "copy_seconds": round(backfill["copy_seconds"], 1),
                     "job_read_all_copies_after_s": round(backfill["read_seconds"], 1)},
        "live_latency_to_iceberg": {"alone": percentiles(latencies(sent_baseline)),
                                    "during_backfill": percentiles(latencies(sent_during))},
        "rows_held": held, "rows_expected": len(records),
        "duplicated_claims": sum(n - 1 for n in claims_held.values() if n > 1),
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"backfill-{result['date']}.json"
    out.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(f"written {out}")
    if held != len(records):
        raise SystemExit(f"the sinks hold {held} rows for {len(records)} records: the backfill was not a no-op")


if __name__ == "__main__":
    main()
