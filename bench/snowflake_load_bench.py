"""Snowflake loader benchmark against the local emulator: append latency and loader rows/s per core.

    python -m bench.snowflake_load_bench [--rows N] [--batch N] [--payload-bytes N] [--bootstrap HOST:PORT]

1. Emulator appends alone: N rows in appends of `--batch` rows, latency p50/p95/p99 per append.
2. With --bootstrap (a local broker): N curated records produced transactionally to a fresh topic,
   then the real loader (jobs.snowflake_load.run) drains it in-process; rows/s by wall clock and
   per CPU-second of this process (rows/s per core). Recorded numbers, not assertions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from connectors.snowflake.config import SnowflakeConfig
from connectors.snowflake.emulator import LocalChannelEmulator
from connectors.snowflake.rows import record_row
from jobs.snowflake_load import LoaderConfig, RetryPolicy, run


def curated(n: int, payload_bytes: int) -> bytes:
    """One curated message with a payload of about payload_bytes."""
    return json.dumps({
        "record_id": f"r-{n}", "record_type": "claim", "feed": "acme_837", "business_key": f"bk-{n}",
        "original_key": None, "sent_at_ms": 1_700_000_000_000 + n, "ingested_at_ms": 1_700_000_001_000 + n,
        "source": "kafka:raw.acme_837", "dt": "2026-11-02", "payload": "x" * payload_bytes,
    }).encode()


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99 of the samples, in ms."""
    cuts = statistics.quantiles(samples_ms, n=100)
    return {"p50_ms": round(cuts[49], 3), "p95_ms": round(cuts[94], 3), "p99_ms": round(cuts[98], 3)}


def bench_appends(folder: Path, rows: int, batch: int, payload_bytes: int) -> dict[str, object]:
    """Emulator append throughput and latency (rows + token in one SQLite transaction each)."""
    channel = LocalChannelEmulator(folder / "appends.sqlite", max_rows_per_append=batch).open_channel("bench-0")
    value = curated(0, payload_bytes)
    latencies, cpu0, wall0 = [], time.process_time(), time.perf_counter()
    for first in range(0, rows, batch):
        chunk = [record_row(value, 0, o, 1) for o in range(first, min(rows, first + batch))]
        t0 = time.perf_counter()
        channel.append_rows(chunk, str(first), str(first + len(chunk) - 1))
        latencies.append((time.perf_counter() - t0) * 1000)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"rows": rows, "batch": batch, "rows_per_s": round(rows / wall), "rows_per_cpu_s": round(rows / cpu),
            **percentiles(latencies)}


def bench_loader(folder: Path, bootstrap: str, rows: int, batch: int, payload_bytes: int) -> dict[str, object]:
    """Produce `rows` records transactionally, then time the loader draining them in-process."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"curated.snowflake.bench{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the topic exists
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": topic, "linger.ms": 20})
    producer.init_transactions(30)
    for first in range(0, rows, 5000):
        producer.begin_transaction()
        for n in range(first, min(rows, first + 5000)):
            producer.produce(topic, key=f"r-{n}".encode(), value=curated(n, payload_bytes))
        producer.commit_transaction(60)
    cfg = LoaderConfig(
        bootstrap_servers=bootstrap, topic=topic, group_id=topic, group_instance_id="", session_timeout_ms=10_000,
        batch_max_rows=batch, poll_timeout_s=0.5, retry=RetryPolicy(5, 0.2, 2.0),
        snowflake=SnowflakeConfig(mode="emulator", database="MEDISTREAM", schema="CURATED", table="RECORDS",
                                  channel_prefix="bench", emulator_path=str(folder / "loader.sqlite"),
                                  emulator_max_rows_per_append=batch, snowpipe=None))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    stats = run(cfg, threading.Event(), max_idle_s=2.0)
    wall, cpu = time.perf_counter() - wall0 - 2.0, time.process_time() - cpu0  # less the idle wait at the end
    assert stats.total_rows == rows, f"loaded {stats.total_rows} of {rows}"
    return {"rows": rows, "batch": batch, "rows_per_s": round(rows / wall), "rows_per_cpu_s": round(rows / cpu),
            "appends": stats.appends}


def main() -> None:
    """Run the benchmarks and print one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--payload-bytes", type=int, default=4096)
    parser.add_argument("--bootstrap", default="", help="local Kafka bootstrap servers; empty: appends only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result: dict[str, object] = {"payload_bytes": args.payload_bytes,
                                     "emulator_appends": bench_appends(Path(tmp), args.rows, args.batch,
                                                                       args.payload_bytes)}
        if args.bootstrap:
            result["loader_from_kafka"] = bench_loader(Path(tmp), args.bootstrap, args.rows, args.batch,
                                                       args.payload_bytes)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
