"""Ingest throughput: the bare IngestStage loop against the whole Flink job, per record size, in one run.

Run: `.venv/bin/python -m bench.ingest_bench [--records N] [--sizes 1,4] [--no-fraud] [--state-backend rocksdb]
[--managed-memory 512m] [--aligned-checkpoints] [--execution-mode process --no-fraud]` (the last prices the Python
mode the job refuses, decision 0051; `--aligned-checkpoints` the checkpoints before decision 0061; `--managed-memory
128m` a mini-cluster's default, which runs before decision 0062 had).
The run gets its own feed
per size, bench_<size>kb_<run id>: a contract for canonical JSON claims on Kafka (a copy of the shipped
hospital_a_claims contract) written to a temporary contracts folder, and the synthetic reference data
for the seed published under s3://medistream-reference/b<run id>/. For each size it
1. times IngestStage(contracts, protectors, reference).process over the generated payloads in a plain Python
   loop (one core), with the reference data read back from that prefix as the operator reads it;
2. publishes the same payloads to a fresh raw.<feed> topic and runs jobs.ingest bounded (Kafka up to
   the offsets at start, an empty landing prefix and the reference prefix each read once) with the
   contracts folder as feeds.contracts.dir, into its own Iceberg table, archive prefix, dead-letter
   topic and checkpoint folder, sampling CPU and RSS of the process tree;
3. checks the Iceberg table and the archive hold exactly the expected business keys
   (infra.local.ground_truth) and the generated record ids, the dead-letter topic nothing, and
   derives per-row commit latency (snapshot committed-at minus ingested_at);
4. reports each loop and job twice: over the whole run, and in a steady window between the commits holding 20 % and
   90 % of the records, start-up and the end left out (decision 0052), with the job against the bare loop per size.
Results print as a table and go to bench/results/ingest-<date>.json. Recorded, never asserted.
For the cost of each stage inside IngestStage, see bench/stage_costs.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LANDING_BUCKET = "medistream-landing"
REFERENCE_BUCKET = "medistream-reference"
TEMPLATE_FEED = "hospital_a_claims"  # shipped contract: canonical JSON claims, one per Kafka message
SEED = 20_251_122  # one seed for every size, so one reference publication matches them all


def parse_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive whole KiB, e.g. 1,4")
    return sizes


def feed_name(size_kb: int, run_id: str) -> str:
    """The run's own feed for one record size (also its raw.<feed> topic suffix)."""
    return f"bench_{size_kb}kb_{run_id}"


def write_contracts(folder: Path, feeds: list[str]) -> dict[str, Any]:
    """One contract per feed, copied from the shipped JSON claims contract, as YAML in `folder`; loaded back."""
    import yaml

    from schemas.contracts import FEEDS_DIR, load_contracts

    template = yaml.safe_load((FEEDS_DIR / f"{TEMPLATE_FEED}.yaml").read_text(encoding="utf-8"))
    folder.mkdir(parents=True)
    for feed in feeds:
        document = {**template, "feed": feed, "description": f"ingest bench feed (a copy of {TEMPLATE_FEED})"}
        (folder / f"{feed}.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_contracts(folder)


def generate_claims(n: int, size_kb: int, feed: str) -> list[Any]:
    """n valid, distinct claims of exactly size_kb KiB on one Kafka feed (no duplicates, no invalid)."""
    from infra.local.synthetic import Feed, Mix, generate

    return list(generate(n, seed=SEED, mix=Mix(claim=1, payment=0, eligibility=0), duplicate_rate=0.0,
                         invalid_rate=0.0, feeds=(Feed(feed, "claim", "kafka"),), size_kb=(size_kb, size_kb)))


def read_reference(cfg: Any) -> Any:
    """The reference data under cfg.reference.path, loaded as the ingest operator loads it at open()."""
    from connectors.reference import load_reference_sets
    from tools.readback import s3_client
    from udfs.enrich import ReferenceData

    reference = ReferenceData()
    reference.update_all(load_reference_sets(s3_client(cfg.s3), cfg.reference.path))
    return reference


def bare_loop(records: list[Any], topic: str, contracts: dict[str, Any], reference: Any) -> dict[str, Any]:
    """IngestStage(contracts, protectors, reference).process over every payload in a plain loop, each call timed.

    Verified means: nothing refused, and the accepted business keys are exactly those the ground truth
    expects, digested under the linkage key of the protector the loop itself ran with (its digests are
    under the static keys, not the stack's), so the expectation cannot drift from the keys in use.

    Like the job's operator, the loop keeps nothing of a record past its call (a count of accepted business keys
    and of refusals); the generated input, which the job's worker never holds, is frozen out of the garbage
    collector's reach first. Holding the outcomes and tracking the input had made every full collection walk
    them: the loop's per-record cost grew with the run's length (decision 0059).
    """
    from bench.resources import STEADY_FROM, STEADY_TO, TreeSampler, frozen_heap, steady_window
    from bench.sink_checks import percentiles
    from infra.local.ground_truth import expected_outcome
    from infra.local.static_keys import static_protectors
    from udfs.ingest import Accepted, IngestStage
    from udfs.source import SourceRef

    # Static keys: the bare loop measures CPU; with KMS the data key is cached the same way.
    stage = IngestStage(contracts, static_protectors(), reference)
    feed = topic.removeprefix("raw.")
    expected_keys = expected_outcome(records, contracts, SEED, stage.feeds[feed].protector.tokenizer.linkage)["claims"]
    unit_ms = int(time.time() * 1000)  # the Kafka timestamp; a JSON feed's records carry their own sent_at
    calls_us: list[float] = []
    accepted: Counter[str] = Counter()
    refused = 0
    clock = time.perf_counter_ns
    n = len(records)
    marks = {math.ceil(STEADY_FROM * n), math.floor(STEADY_TO * n)}  # done when the steady window opens, closes
    progress: list[tuple[float, int]] = []
    with frozen_heap(), TreeSampler() as sampler:
        start = time.perf_counter()
        for offset, record in enumerate(records):
            if offset in marks:
                progress.append((time.time(), offset))
            source = SourceRef.from_kafka(topic, 0, offset)
            t0 = clock()
            # now=None, as the operator calls it: the rules read the clock once per unit.
            outcomes = list(stage.process(record.payload, source, unit_ms))  # a generator: run it here
            calls_us.append((clock() - t0) / 1000)
            for outcome in outcomes:
                if isinstance(outcome, Accepted):
                    accepted[outcome.keys.business_key] += 1
                else:
                    refused += 1
        wall = time.perf_counter() - start
    cpu_s = sampler.usage.cpu_s or math.nan  # a run shorter than one sample reads no CPU: no rate, not a crash
    return {
        "mode": "bare loop", "records": n, "refused": refused, "wall_s": wall, "records_per_s": n / wall,
        "cpu_s": sampler.usage.cpu_s, "records_per_cpu_s": n / cpu_s,
        "cpu_us_per_record": cpu_s / n * 1e6, "mean_call_us": sum(calls_us) / n,
        "peak_rss_mib": sampler.usage.peak_rss_bytes / 2**20, "latency_kind": "per call, µs",
        "latency": percentiles(calls_us), "steady": steady_window(progress, sampler.usage, n),
        "reference_versions": reference.versions(),
        "keys_missing": (expected_keys - accepted).total(), "keys_unexpected": (accepted - expected_keys).total(),
        "ok": refused == 0 and accepted == expected_keys,
    }


def publish(bootstrap: str, topic: str, records: list[Any], contract: Any) -> float:
    """Produce every record as its feed's unit (keyed by record id) and wait for all acks; return seconds taken."""
    from confluent_kafka import Producer

    from infra.local.feed_encoding import encode_unit

    failures: list[str] = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20,
                         "batch.size": 1_000_000, "queue.buffering.max.kbytes": 262_144})

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    start = time.perf_counter()
    for record in records:
        while True:
            try:
                producer.produce(topic, value=encode_unit(contract, [record.payload]), key=record.record_id.encode(),
                                 on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry this record
                producer.poll(0.2)
        producer.poll(0)
    if producer.flush(60) or failures:
        raise RuntimeError(f"publishing to {topic} failed: {len(failures)} errors, first: {failures[:1]}")
    return time.perf_counter() - start


def bench_config(base: Any, run_id: str, size_kb: int, topic: str, workdir: Path, contracts_dir: Path) -> Any:
    """The local config pointed at this run's own topic, group, tables, prefixes, contracts and checkpoints."""
    tag = f"{size_kb}kb_{run_id}"
    return replace(
        base,
        kafka=replace(base.kafka, bounded=True, raw_topic_pattern=re.escape(topic), group_id=f"bench-{tag}",
                      dlq_topic=f"bench.dlq.{tag}"),
        landing=replace(base.landing, path=f"s3://{LANDING_BUCKET}/bench-empty-{tag}/", monitor_interval=""),
        iceberg=replace(base.iceberg, table_suffix=f"_bench_{tag}"),
        archive=replace(base.archive, path=f"{base.archive.path.rstrip('/')}/bench-{tag}/",
                        dead_letters_path=f"{base.archive.dead_letters_path.rstrip('/')}/bench-{tag}/"),
        curated=replace(base.curated, snowflake_topic=f"bench.curated.{tag}",
                        partner_topic_prefix=f"bench.curated.{tag}.partner."),
        checkpoints=replace(base.checkpoints, directory=(workdir / f"checkpoints-{size_kb}kb").as_uri()),
        # Read once: with a monitor interval the reference source never ends, nor would the job.
        reference=replace(base.reference, path=reference_path(run_id), monitor_interval=""),
        feeds=replace(base.feeds, contracts_dir=str(contracts_dir)),
    )


def reference_path(run_id: str) -> str:
    """The run's own reference prefix (every size reads the same publication)."""
    return f"s3://{REFERENCE_BUCKET}/b{run_id}/"


# The state backend a run's mini-cluster keeps keyed state in: the embedded default's, or the one a cluster and
# Managed Flink use (tools/cluster_config.py), whose per-access costs (serialization, no TTL sweeps) differ.
STATE_BACKENDS: dict[str, dict[str, str]] = {
    "hashmap": {"state.backend.type": "hashmap"},
    "rocksdb": {"state.backend.type": "rocksdb", "execution.checkpointing.incremental": "true"},
}
# RocksDB's managed memory (its block cache and write buffers, shared by every keyed operator of the slot): the local
# cluster's TaskManager has 512 MB (1728m process: 0.4 of 1,280 MB), a KPU about 1 GB of native memory; a mini-cluster
# gets 128 MB unless told (decision 0062).
MANAGED_MEMORY = "512m"


def flink_run(cfg: Any, records: list[Any], contract: Any, expected: dict[str, Any], job_name: str,
              state_backend: str = "hashmap", managed_memory: str = MANAGED_MEMORY) -> dict[str, Any]:
    """Publish, run the ingest job bounded to completion, then verify every sink against keys and ids."""
    from bench.resources import TreeSampler, steady_window, us_per_record
    from bench.sink_checks import check_archive, check_claims, count_dead_letters, iceberg_layout, percentiles
    from infra.local.process import free_loopback_port
    from jobs import ingest, preflight
    from tools.readback import s3_client, split_s3_url

    topic = cfg.kafka.raw_topic_pattern.replace("\\", "")
    preflight.check_kafka(cfg.kafka.bootstrap_servers, (topic,))
    preflight.check_ingest_dependencies(cfg)  # contracts, dead-letter topic, buckets, catalog folder
    publish_s = publish(cfg.kafka.bootstrap_servers, topic, records, contract)
    # The filesystem source lists the prefix; a hidden ("_") object makes it exist and is never read.
    bucket, prefix = split_s3_url(cfg.landing.path)
    s3_client(cfg.s3).put_object(Bucket=bucket, Key=f"{prefix}_placeholder", Body=b"")

    setup_start = time.perf_counter()
    rest_port = free_loopback_port()
    cluster = {**STATE_BACKENDS[state_backend], "taskmanager.memory.managed.size": managed_memory,
               "rest.port": str(rest_port)}
    env, t_env = ingest.create_environments(cfg, None, cluster_extra=cluster)
    # A name of its own: it prefixes the dead-letter sink's Kafka transactional ids.
    ingest.build(env, t_env, cfg, job_name=job_name)
    setup_s = time.perf_counter() - setup_start
    with TreeSampler(jvm_threads=True) as sampler, CheckpointWatch(rest_port) as checkpoints:
        start = time.perf_counter()
        result = env.execute(job_name)
        wall = time.perf_counter() - start
    net_s = result.get_net_runtime() / 1000

    # The records are all distinct, so record ids must match one to one as well as business keys.
    ids = {r.record_id for r in records}
    claims = check_claims(cfg, ids, expected["claims"])
    archive = check_archive(cfg, ids, expected["archived"])
    dead_letters = count_dead_letters(cfg)
    n = len(records)
    ok = (claims.rows == n and claims.distinct_ids == n and claims.missing == 0 and claims.unexpected == 0
          and claims.missing_keys == 0 and claims.extra_keys == 0
          and archive["records"] == n and archive["missing"] == 0 and archive["missing_keys"] == 0
          and archive["extra_keys"] == 0 and dead_letters == 0 and not expected["dead_letters"])
    return {
        "mode": "flink job", "records": n, "wall_s": wall, "net_runtime_s": net_s, "setup_s": setup_s,
        "publish_s": publish_s, "records_per_s": n / wall, "records_per_s_net": n / net_s,
        "cpu_s": sampler.usage.cpu_s, "cores_busy": sampler.usage.cpu_s / wall,
        "records_per_cpu_s": n / sampler.usage.cpu_s, "cpu_us_per_record": sampler.usage.cpu_s / n * 1e6,
        "peak_rss_mib": sampler.usage.peak_rss_bytes / 2**20,
        "peak_jvm_rss_mib": sampler.usage.peak_child_rss_bytes / 2**20,
        "processes_sampled": len(sampler.usage.processes),
        # Where the JVM's CPU went, by thread name (15 characters, digits as #): the task threads (a chain
        # of operators each: the ingest operator with its conversions; dedup with every sink), the JIT
        # compilers, the Kafka producers' I/O threads, GC. CPU µs per record over the whole run.
        "jvm_threads_cpu_us_per_record": us_per_record(sampler.usage.jvm_threads, n),
        # The same between the Iceberg commits that hold 20 % and 90 % of the records: past start-up and the end.
        "steady": steady_window(claims.commits, sampler.usage, n),
        "latency_kind": "commit (snapshot committed-at - ingested_at), ms",
        "latency": percentiles(claims.commit_latency_ms),
        "iceberg": {"rows": claims.rows, "distinct_ids": claims.distinct_ids, "missing": claims.missing,
                    "unexpected": claims.unexpected, "missing_keys": claims.missing_keys,
                    "extra_keys": claims.extra_keys, "snapshots": claims.snapshots},
        "archive": archive, "dead_letters": dead_letters, "ok": ok,
        # The claim tables' data files as this code wrote them: count, bytes, each column's Parquet encodings.
        "iceberg_files": iceberg_layout(cfg),
        "parallelism": cfg.runtime.parallelism, "python_execution_mode": cfg.runtime.python_execution_mode,
        "checkpoint_interval_ms": cfg.checkpoints.interval_ms, "checkpoints_unaligned": cfg.checkpoints.unaligned,
        # The job's checkpoints as its REST API last answered (every CheckpointWatch.EVERY_S: the last few may be
        # missing): durations, sizes, in-flight data persisted, the newest one's type.
        "checkpoints": checkpoints.last,
        "state_backend": state_backend, "managed_memory": managed_memory,
    }


class CheckpointWatch:
    """Reads the running job's checkpoint statistics from its mini-cluster's REST API every EVERY_S seconds, in a
    thread, and keeps the last answer (`last`; None if the job never answered): a bounded job's API goes when it
    ends, so its statistics are read while it runs."""

    EVERY_S = 5.0

    def __init__(self, port: int) -> None:
        import threading

        self.port = port
        self.last: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint-watch", daemon=True)

    def __enter__(self) -> CheckpointWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from tools.minicluster_rest import MiniClusterRest

        while not self._stop.wait(self.EVERY_S):
            try:
                self.last = MiniClusterRest.of_only_job(self.port).checkpoint_summary()
            except (OSError, ValueError, KeyError):  # not serving yet, or gone with the job
                continue


def checkpoint_line(summary: dict[str, Any] | None) -> str:
    """CheckpointWatch's last answer in one line; a run with no completed checkpoint says so."""
    counts = (summary or {}).get("counts") or {}
    if not summary or not counts.get("completed"):
        return f"none completed ({counts.get('failed', 0)} failed)" if summary else "the job's API never answered"
    e2e, inflight = summary["end_to_end_duration"], summary["persisted_data"]
    return (f"{counts['completed']} completed, {counts.get('failed', 0)} failed, newest {summary['latest_type']}; "
            f"end to end P50 / P95 / max {e2e['p50']:,.0f} / {e2e['p95']:,.0f} / {e2e['max']:,.0f} ms; "
            f"in-flight data persisted, max {inflight['max']:,} bytes")


def clean_up(cfg: Any) -> dict[str, int]:
    """Remove the run's table, archive and landing prefixes, and its Kafka topics (raw, dead letters, curated)."""
    from confluent_kafka.admin import AdminClient

    from bench.sink_checks import delete_s3_prefix, drop_tables

    removed = {"iceberg_objects": drop_tables(cfg), "archive_objects": delete_s3_prefix(cfg, cfg.archive.path)
               + delete_s3_prefix(cfg, cfg.archive.dead_letters_path),
               "landing_objects": delete_s3_prefix(cfg, cfg.landing.path)}
    topic = cfg.kafka.raw_topic_pattern.replace("\\", "")
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers, "log_level": 4})
    # The curated topics too: left behind, a 100,000-record run's curated copies took ~6 GB of the broker's disk.
    curated = [name for name in admin.list_topics(timeout=30).topics
               if name == cfg.curated.snowflake_topic or name.startswith(cfg.curated.partner_topic_prefix)]
    for future in admin.delete_topics([topic, cfg.kafka.dlq_topic, *curated], operation_timeout=30).values():
        future.result(timeout=30)
    return removed


def _latency_text(run: dict[str, Any]) -> str:
    lat = run["latency"]
    if not lat:
        return "-"
    if run["mode"] == "bare loop":
        return f"call {lat['p50']:,.0f} / {lat['p95']:,.0f} / {lat['p99']:,.0f} µs"
    return f"commit {lat['p50'] / 1000:.2f} / {lat['p95'] / 1000:.2f} / {lat['p99'] / 1000:.2f} s"


def print_table(runs: list[dict[str, Any]]) -> None:
    """One line per (size, mode)."""
    header = ("size", "mode", "records", "wall s", "net s", "rec/s", "rec/CPU-s", "CPU µs/rec", "cores",
              "steady rec/CPU-s", "steady µs/rec", "peak RSS MiB", "of it JVM", "latency p50 / p95 / p99", "verified")
    rows = [header]
    for run in runs:
        rows.append((
            f"{run['size_kb']} KB", run["mode"], f"{run['records']:,}", f"{run['wall_s']:.1f}",
            f"{run['net_runtime_s']:.1f}" if "net_runtime_s" in run else "-", f"{run['records_per_s']:,.0f}",
            f"{run['records_per_cpu_s']:,.0f}", f"{run['cpu_us_per_record']:,.0f}",
            f"{run['cpu_s'] / run['wall_s']:.2f}",
            f"{run['steady']['records_per_cpu_s']:,.0f}" if run.get("steady") else "-",
            f"{run['steady']['cpu_us_per_record']:,.0f}" if run.get("steady") else "-", f"{run['peak_rss_mib']:,.0f}",
            f"{run['peak_jvm_rss_mib']:,.0f}" if "peak_jvm_rss_mib" in run else "-", _latency_text(run),
            "yes" if run["ok"] else "NO",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("  ".join(cell.rjust(w) if i and cell[:1].isdigit() else cell.ljust(w) for cell, w in zip(row, widths,
                                                                                                      strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def job_to_bare_loop(runs: list[dict[str, Any]]) -> dict[int, dict[str, float | None]]:
    """Per size, the job's records per CPU-second over the bare loop's: whole runs, and steady windows."""
    ratios: dict[int, dict[str, float | None]] = {}
    for kb in dict.fromkeys(run["size_kb"] for run in runs):
        by_mode = {run["mode"]: run for run in runs if run["size_kb"] == kb}
        job, loop = by_mode.get("flink job"), by_mode.get("bare loop")
        if job is None or loop is None:
            continue
        steady = (job["steady"]["records_per_cpu_s"] / loop["steady"]["records_per_cpu_s"]
                  if job.get("steady") and loop.get("steady") else None)
        ratios[kb] = {"whole_run": job["records_per_cpu_s"] / loop["records_per_cpu_s"], "steady": steady}
    return ratios


def print_ratios(runs: list[dict[str, Any]]) -> None:
    """The job against the bare loop, per size (issue 19's ≥ 50 %)."""
    for kb, ratio in job_to_bare_loop(runs).items():
        steady = f"{ratio['steady']:.0%}" if ratio["steady"] is not None else "- (no steady window)"
        print(f"{kb} KB: the job does {ratio['whole_run']:.0%} of the bare loop's records per CPU-second over the "
              f"whole run, {steady} in the steady window")


def write_results(doc: dict[str, Any], kind: str = "ingest") -> Path:
    """bench/results/<kind>-<date>.json, numbered when the day already has one."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"{kind}-{time.strftime('%Y-%m-%d')}"
    path, n = RESULTS_DIR / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = RESULTS_DIR / f"{stem}-{n}.json"
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Run every size in both modes, print the table, write the JSON; 1 if any run lost records."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # 100k: with the compiled (fastjsonschema) validator, 20k records are ~1 s of job work, too little
    # against mini-cluster start and the final checkpoint.
    parser.add_argument("--records", type=int, default=100_000, help="records per size (default 100000)")
    parser.add_argument("--sizes", type=parse_sizes, default=[1, 4], help="record sizes in KiB (default 1,4)")
    parser.add_argument("--no-fraud", action="store_true",
                        help="run the job without the fraud detectors (fraud.enabled false), to price them")
    parser.add_argument("--state-backend", choices=sorted(STATE_BACKENDS), default="hashmap",
                        help="the job's keyed state: hashmap (the embedded default) or rocksdb (a cluster's and "
                             "Managed Flink's, incremental checkpoints)")
    parser.add_argument("--execution-mode", choices=("thread", "process"), default=None,
                        help="the job's Python execution mode: thread (the default, the only one the job's properties "
                             "accept) or process, which runs the Python operators in worker processes fed in "
                             "bundles; the job refuses it (decision 0051), the bench prices it")
    parser.add_argument("--managed-memory", default=MANAGED_MEMORY,
                        help=f"the mini-cluster's managed memory, RocksDB's cache and write buffers (default "
                             f"{MANAGED_MEMORY}, a local cluster TaskManager's; 128m is a mini-cluster's own default)")
    parser.add_argument("--aligned-checkpoints", action="store_true",
                        help="checkpoint barriers wait behind buffered records (checkpoints.unaligned false), as "
                             "before decision 0061, to price unaligned ones")
    args = parser.parse_args(argv)
    if args.records <= 0:
        parser.error("--records must be positive")
    if not re.fullmatch(r"[1-9][0-9]*\s*(k|m|g|kb|mb|gb)", args.managed_memory, re.IGNORECASE):
        parser.error(f"--managed-memory takes a size such as 512m or 1g, not {args.managed_memory!r}")
    if args.execution_mode == "process" and not args.no_fraud:
        parser.error("--execution-mode process needs --no-fraud: in process mode PyFlink's MapState.put_all reads the "
                     "dict it is given as pairs, and the fraud detectors' put_all fails (decision 0051)")
    began, load_before = time.perf_counter(), os.getloadavg()
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_REGION", "us-east-1")):
        os.environ[key] = value  # the local moto server; never real credentials

    from bench.resources import code_version, machine_info
    from bench.sink_checks import delete_s3_prefix
    from connectors.properties import default_properties_path, load_ingest_config, medistream_home, read_property_groups
    from infra.local import stack
    from infra.local.ground_truth import expected_outcome
    from infra.local.reference import publish_reference
    from tools.readback import linkage_digest, s3_client, split_s3_url

    run_id = uuid.uuid4().hex[:8]
    workdir = medistream_home() / "bench" / run_id
    (workdir / "tmp").mkdir(parents=True)
    os.environ["TMPDIR"] = str(workdir / "tmp")  # PyFlink leaves python-dist-* behind in the temp dir
    status = stack.up()
    started_stack = [c.name for c in (status.kafka, status.moto) if c.started_in_s is not None]
    base = load_ingest_config(read_property_groups(default_properties_path()))
    if args.no_fraud:
        base = replace(base, fraud=replace(base.fraud, enabled=False))
    if args.execution_mode is not None:
        base = replace(base, runtime=replace(base.runtime, python_execution_mode=args.execution_mode))
    if args.aligned_checkpoints:
        base = replace(base, checkpoints=replace(base.checkpoints, unaligned=False))
    print(f"run {run_id}: {args.records:,} claims per size, sizes {args.sizes} KiB, "
          f"state backend {args.state_backend}, Python execution mode {base.runtime.python_execution_mode}, "
          f"{'unaligned' if base.checkpoints.unaligned else 'aligned'} checkpoints, "
          f"managed memory {args.managed_memory}", flush=True)

    runs: list[dict[str, Any]] = []
    contracts_dir = workdir / "feeds"
    configs = {kb: bench_config(base, run_id, kb, f"raw.{feed_name(kb, run_id)}", workdir, contracts_dir)
               for kb in args.sizes}
    reference_removed = 0
    try:
        contracts = write_contracts(contracts_dir, [feed_name(kb, run_id) for kb in args.sizes])
        bucket, prefix = split_s3_url(reference_path(run_id))
        publish_reference(s3_client(base.s3), bucket, prefix, SEED, version=1)
        reference = read_reference(configs[args.sizes[0]])
        data = {kb: generate_claims(args.records, kb, feed_name(kb, run_id)) for kb in args.sizes}
        digest = linkage_digest(base)
        expected = {kb: expected_outcome(data[kb], contracts, SEED, digest) for kb in args.sizes}
        for kb in args.sizes:  # all bare loops first, before a JVM exists to share the cores with
            loop = bare_loop(data[kb], f"raw.{feed_name(kb, run_id)}", contracts, reference)
            runs.append({"size_kb": kb, **loop})
            print(f"{kb} KB bare loop: {loop['records_per_s']:,.0f} records/s, "
                  f"{loop['records_per_cpu_s']:,.0f} per CPU-second, verified: {'yes' if loop['ok'] else 'NO'} "
                  f"(refused {loop['refused']}, keys missing {loop['keys_missing']}, "
                  f"unexpected {loop['keys_unexpected']})", flush=True)
        for kb in args.sizes:
            cfg = configs[kb]
            try:
                run = flink_run(cfg, data[kb], contracts[feed_name(kb, run_id)], expected[kb],
                                f"medistream-bench-{kb}kb-{run_id}", args.state_backend, args.managed_memory)
            finally:
                removed = clean_up(cfg)
            runs.append({"size_kb": kb, **run, "cleaned_up": removed})
            print(f"{kb} KB flink job: {run['records_per_s']:,.0f} records/s, verified: {run['ok']}", flush=True)
            print(f"{kb} KB checkpoints: {checkpoint_line(run['checkpoints'])}", flush=True)
            top = list(run["jvm_threads_cpu_us_per_record"].items())[:8]
            print("  JVM CPU µs per record by thread: " + ", ".join(f"{name} {us:,.0f}" for name, us in top),
                  flush=True)
            if run["steady"]:
                steady = run["steady"]
                top = list(steady.get("jvm_threads_cpu_us_per_record", {}).items())[:8]
                print(f"  steady window (records {steady['from_records']:,}-{steady['to_records']:,}): "
                      f"{steady['records_per_cpu_s']:,.0f} per CPU-second, {steady['records_per_s']:,.0f} records/s; "
                      "by thread: " + ", ".join(f"{name} {us:,.0f}" for name, us in top), flush=True)
    finally:
        try:
            reference_removed = delete_s3_prefix(base, reference_path(run_id))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(OSError):  # other runs may still use it
                workdir.parent.rmdir()
            if started_stack:
                stack.down(components=started_stack)

    print()
    print_table(runs)
    print_ratios(runs)
    doc = {"machine": machine_info(), "code": code_version(), "run_id": run_id,
           "records_per_size": args.records, "sizes_kb": args.sizes, "seed": SEED,
           "fraud_detectors": base.fraud.enabled, "state_backend": args.state_backend,
           "feed_contract": f"copy of schemas/feeds/{TEMPLATE_FEED}.yaml",
           "reference_objects_removed": reference_removed,
           "duration_s": round(time.perf_counter() - began, 1),
           # Other work on the machine shows as cores < 1 in the bare loop and a load above ~1 here.
           "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()}, "runs": runs,
           "job_to_bare_loop": job_to_bare_loop(runs),
           "notes": ["rec/CPU-s: records / CPU seconds (user+system) of this process and its children "
                     "(the mini-cluster JVM, which hosts the thread-mode Python operator).",
                     "flink wall s: env.execute() submit to finish, incl. mini-cluster start and the final "
                     "checkpoint; net s: JobExecutionResult.get_net_runtime().",
                     "peak RSS: this process (holding every size's generated records) plus its children; "
                     "'of it JVM': the children alone.",
                     "steady: the same measures between the first Iceberg commit holding 20 % of the records and the "
                     "last holding at most 90 % (the bare loop: records 20 % to 90 %), the tree's CPU read off a "
                     "0.2 s sample series at those times: what a job that runs for days pays per record, without "
                     "start-up (mini-cluster, planning, first checkpoints, most JIT warm-up) and the end.",
                     "commit latency: per row, committed-at of the first Iceberg snapshot holding it minus its "
                     "ingested_at; bounded by the checkpoint interval, since the sink commits per checkpoint."]}
    path = write_results(doc)
    print(f"\nresults: {path.relative_to(BENCH_DIR.parent)}; took {doc['duration_s']:.0f} s; "
          f"load average before {load_before[0]:.1f}, after {doc['load_average_1_5_15']['after'][0]:.1f}")
    return 0 if all(run["ok"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
