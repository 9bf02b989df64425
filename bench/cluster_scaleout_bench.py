"""Scale-out of the ingest job from the Managed Flink zip on the local cluster: parallelism 1, 2 (and 4).

    python -m bench.cluster_scaleout_bench --records 20000 --sizes 4 --parallelism 1,2,4 [--zip dist/<zip>]

The zip is built from HEAD (tools.package, Python 3.12) unless `--zip` names one. For each record size
and parallelism, on a cluster of its own (tools.private_cluster: 1 JobManager + 2 TaskManagers with 2
slots each, RocksDB, checkpoints every `--checkpoint-interval` on the local S3 API, workers on the
Python 3.12 runtime holding only apache-flink; `--reuse-cluster` keeps one cluster for every run):
1. run-unique topics, prefixes, tables and contracts (infra.local.isolation) and the generator's records
   over the shipped feeds (claims and payments, 2 % exact re-sends, 2 % invalid), published before the
   job starts, so it starts on a backlog and runs flat out;
2. `tools.deploy.deploy` at that parallelism; the clock starts when every vertex is RUNNING and stops
   when the Iceberg tables hold every expected claim, payment and dead letter (snapshot summaries,
   polled each second) and the archive every expected record;
3. over that window: CPU seconds of the JobManager and TaskManagers with their children (Python
   workers), the machine's busy cores and load average; peak RSS of each process with its children
   from submission until the job stops;
4. stop with savepoint; every sink compared with the ground truth by key: 0 lost, 0 duplicated.
Prints a table and the p2/p1 ratios, writes bench/results/cluster-scaleout-<date>.json. Recorded,
never asserted (exit 1 when a run was not exact). Needs the local stack (`./medistream stack up`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SEED = 18
DUPLICATE_RATE = INVALID_RATE = 0.02
RUN_TIMEOUT_S = 900.0


def parse_list(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; every item a positive whole number."""
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive whole numbers separated by commas, got {text!r}")
    return values


def iceberg_wanted(expected: Mapping[str, Any]) -> dict[str, int]:
    """Rows each Iceberg table must hold when the job is done: every routed record type, and the dead letters."""
    from connectors.iceberg import TABLE_FOR_TYPE

    wanted = {TABLE_FOR_TYPE[sink.split(":", 1)[1]]: sum(keys.values())
              for sink, keys in expected["routed"].items() if sink.startswith("iceberg:")}
    return wanted | {"dead_letters": sum(expected["dead_letters"].values())}


def ratios(runs: Sequence[Mapping[str, Any]], base: int = 1) -> dict[str, dict[str, float]]:
    """Per size and parallelism p > base: records/s and records per CPU-second at p over the same at `base`."""
    found: dict[str, dict[str, float]] = {}
    by_key = {(r["size_kb"], r["parallelism"]): r for r in runs if r.get("exact")}
    for (size, p), run in sorted(by_key.items()):
        ref = by_key.get((size, base))
        if p == base or ref is None:
            continue
        found[f"{size}kb p{p}/p{base}"] = {
            "records_per_s": round(run["records_per_s"] / ref["records_per_s"], 2),
            "records_per_cpu_s": round(run["records_per_cpu_s"] / ref["records_per_cpu_s"], 2)}
    return found


def table_rows(runs: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """The printed table: a header, then one row per run."""
    rows: list[tuple[str, ...]] = [("size", "p", "records", "wall s", "rec/s", "CPU s", "rec/CPU-s",
                                    "cores (cluster / machine)", "peak RSS MiB JM / TMs", "load 1m", "exact")]
    for r in runs:
        rss = r["peak_rss_mib"]
        tms = " / ".join(f"{rss[name]:,}" for name in sorted(rss) if name != "jobmanager")
        rows.append((f"{r['size_kb']} KB", str(r["parallelism"]), f"{r['records']:,}", f"{r['wall_s']:.1f}",
                     f"{r['records_per_s']:,.1f}", f"{r['cluster_cpu_s']:.1f}", f"{r['records_per_cpu_s']:,.1f}",
                     f"{r['cluster_cores']:.2f} / {r['machine_busy_cores']:.2f}",
                     f"{rss.get('jobmanager', 0):,} / {tms}", f"{r['load_1m']['max']:.1f}",
                     "yes" if r["exact"] else "NO"))
    return rows


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


class Drain:
    """Polls one run's sinks until every expected row is committed: Iceberg snapshot summaries each poll,
    then the archive (a full read, so only once the tables are complete)."""

    def __init__(self, cfg: Any, expected: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self.wanted = iceberg_wanted(expected)
        self.archived_wanted = sum(expected["archived"].values())
        self.have: dict[str, int] = dict.fromkeys(self.wanted, 0)
        self._tables: dict[str, Any] = {}

    def _rows(self, name: str) -> int:
        from pyiceberg.exceptions import NoSuchTableError

        from bench.latency_bench import committed_rows
        from tools.readback import iceberg_table

        if name not in self._tables:
            try:
                self._tables[name] = iceberg_table(self.cfg.iceberg, self.cfg.s3, self.cfg.iceberg.table(name))
            except NoSuchTableError:  # the job creates its tables as it starts
                return 0
        return committed_rows(self._tables[name])

    def tables_done(self) -> bool:
        """Whether every table holds its expected rows (or more: the exact check after the stop judges)."""
        self.have = {name: self._rows(name) for name in self.wanted}
        return all(self.have[name] >= want for name, want in self.wanted.items())

    def archive_done(self) -> bool:
        """Whether the committed archive files hold every expected record."""
        from tools.readback import archived_ids

        return sum(archived_ids(self.cfg)[0].values()) >= self.archived_wanted


def busy_cpu_s() -> float:
    """Seconds every core of the machine spent busy since boot."""
    import psutil

    times = psutil.cpu_times()  # guest time is inside user time already: not added again
    return sum(getattr(times, part, 0.0) for part in ("user", "nice", "system", "irq", "softirq", "steal"))


def measure(drain: Drain, sampler: Any, timeout_s: float) -> dict[str, Any]:
    """From now (every vertex RUNNING) until the drain is complete: wall seconds, cluster CPU, machine load."""
    mark, start, busy0 = sampler.mark(), time.monotonic(), busy_cpu_s()
    loads = [os.getloadavg()[0]]
    tables_at: float | None = None
    while True:
        now = time.monotonic()
        if now - start > timeout_s:
            raise TimeoutError(f"after {timeout_s:.0f} s the tables hold {drain.have} of {drain.wanted}")
        loads.append(os.getloadavg()[0])
        if tables_at is None and drain.tables_done():
            tables_at = time.monotonic()
        if tables_at is not None:
            # The reading before the archive is read: the archive check costs seconds of this process's CPU.
            at, cpu, busy = time.monotonic(), sampler.cpu_since(mark), busy_cpu_s()
            if drain.archive_done():
                break
        time.sleep(1.0)
    wall = at - start
    cluster_cpu = sum(cpu.values())
    return {"wall_s": round(wall, 1), "tables_complete_s": round(tables_at - start, 1),
            "cluster_cpu_s": round(cluster_cpu, 1), "cpu_s_by_process": {k: round(v, 1) for k, v in cpu.items()},
            "cluster_cores": round(cluster_cpu / wall, 2), "machine_busy_cores": round((busy - busy0) / wall, 2),
            "load_1m": {"min": min(loads), "max": max(loads), "mean": round(sum(loads) / len(loads), 2)}}


def prepare(tag: str, home: Path, records: int, size_kb: int, kafka_only: bool) -> dict[str, Any]:
    """Run-unique config and properties; the generated records published, the reference data too; the truth."""
    from infra.local import synthetic
    from infra.local.ground_truth import expected_outcome
    from infra.local.isolation import isolated_config, write_properties
    from infra.local.publish import publish
    from infra.local.reference import publish_reference
    from schemas.contracts import load_contracts
    from tools.readback import linkage_digest, s3_client

    cfg = isolated_config(tag, home)
    properties = write_properties(tag, home)
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    feeds = [f for f in synthetic.feeds_from_contracts(contracts.values()) if f.transport == "kafka" or not kafka_only]
    generated = list(synthetic.generate(records, seed=SEED, feeds=feeds, mix=synthetic.Mix(0.8, 0.2, 0.0),
                                        duplicate_rate=DUPLICATE_RATE, invalid_rate=INVALID_RATE,
                                        size_kb=(size_kb, size_kb)))
    s3 = s3_client(cfg.s3)
    publish_reference(s3, "medistream-reference", f"t{tag}/", SEED, version=1)
    began = time.monotonic()
    summary = publish(generated, cfg.kafka.bootstrap_servers, s3, "medistream-landing", landing_prefix=f"t{tag}/",
                      contracts=contracts)
    return {"cfg": cfg, "properties": properties, "publish_s": round(time.monotonic() - began, 1),
            "expected": expected_outcome(generated, contracts, SEED, linkage_digest(cfg)),
            "published": {"kafka": sum(summary.kafka_records.values()),
                          "landing": sum(summary.landing_records.values()),
                          "landing_files": len(summary.landing_objects)},
            "payload_bytes": sum(len(g.payload) for g in generated)}


def one_run(zip_path: Path, settings: Any, sampler: Any, run: dict[str, Any], parallelism: int,
            timeout_s: float) -> dict[str, Any]:
    """Deploy at `parallelism`, measure until drained, stop with savepoint, compare every sink by key."""
    from tools import cluster_status, deploy, private_cluster
    from tools.readback import compare_sinks, inexact, read_sinks

    sampler.reset_peaks()
    deployed = deploy.deploy(zip_path, ["ingest"], settings=settings, base_properties=run["properties"],
                             parallelism=parallelism)
    job_id = deployed["jobs"]["ingest"]
    try:
        running_s = cluster_status.wait_running(settings, job_id, 300)
        vertices = (cluster_status.rest_get(settings, f"/jobs/{job_id}") or {}).get("vertices", [])
        measured = measure(Drain(run["cfg"], run["expected"]), sampler, timeout_s)
        stopped = deploy.stop(job_id, settings)
    except BaseException:
        private_cluster.cancel(settings, job_id)
        raise
    found = compare_sinks(run["expected"], read_sinks(run["cfg"]))
    records = run["expected"]["records"]
    return {"parallelism": parallelism, "records": records, "job_id": job_id, "deploy_s": deployed["deploy_s"],
            "running_after_deploy_s": round(running_s, 1),
            "vertex_parallelism": {v["name"][:60]: v["parallelism"] for v in vertices},
            **measured, "records_per_s": round(records / measured["wall_s"], 1),
            "records_per_cpu_s": round(records / measured["cluster_cpu_s"], 1),
            "peak_rss_mib": dict(sampler.peak_rss_mib), "stopped": stopped["state"],
            "counts": found, "exact": not inexact(found)}


def clean_up(cfg: Any) -> dict[str, int]:
    """Remove what one run made: its tables, archive, landing and reference prefixes, topics and consumer group."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    from bench.sink_checks import delete_s3_prefix, drop_tables

    removed = {"iceberg_objects": drop_tables(cfg)}
    removed["s3_objects"] = sum(delete_s3_prefix(cfg, url) for url in (
        cfg.archive.path, cfg.archive.dead_letters_path, cfg.landing.path, cfg.reference.path))
    tag = cfg.kafka.dlq_topic.removeprefix("dlq.")  # t<run tag>
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers, "log_level": 4})
    topics = [t for t in admin.list_topics(timeout=30).topics
              if t.startswith((f"raw.{tag}_", f"curated.{tag}.")) or t == cfg.kafka.dlq_topic]
    for future in (admin.delete_topics(topics, operation_timeout=30).values() if topics else ()):
        future.result(timeout=30)
    for future in admin.delete_consumer_groups([cfg.kafka.group_id], request_timeout=30).values():
        try:
            future.result(timeout=30)
        except KafkaException as err:  # a group the job never committed offsets to does not exist
            if err.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
                raise
    removed["topics"] = len(topics)
    return removed


def own_name(zip_path: Path, workdir: Path, run_id: str) -> Path:
    """The zip under a run-unique name: `deploy` unpacks to $MEDISTREAM_HOME/deploy/<zip stem>/, which a test
    deploying the same commit at the same time would replace under this run's job, or delete after it."""
    linked = workdir / f"scaleout-{run_id}-{zip_path.name}"
    try:
        os.link(zip_path, linked)
    except OSError:  # another filesystem
        shutil.copyfile(zip_path, linked)
    return linked


def main(argv: list[str] | None = None) -> int:
    """Every size at every parallelism; the table, the ratios and the JSON. 1 if a run was not exact."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_scaleout_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000, help="records per run (default 20000)")
    parser.add_argument("--sizes", type=parse_list, default=[4], help="record sizes in KiB (default 4)")
    parser.add_argument("--parallelism", type=parse_list, default=[1, 2], help="default 1,2 (4 fills every slot)")
    parser.add_argument("--zip", type=Path, help="a built zip (default: build one from HEAD)")
    parser.add_argument("--checkpoint-interval", default="5 s", help="the cluster's (default '5 s')")
    parser.add_argument("--kafka-only", action="store_true", help="only the feeds that arrive on Kafka")
    parser.add_argument("--reuse-cluster", action="store_true",
                        help="one cluster for every run (default: a fresh one each, so no run inherits warm JVMs)")
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT_S, help="seconds a run may take to drain")
    args = parser.parse_args(argv)
    if args.records <= 0:
        parser.error("--records must be positive")
    if max(args.parallelism) > 4:
        parser.error("the cluster has 4 slots: --parallelism at most 4")

    from connectors.properties import local_aws_environment, medistream_home

    local_aws_environment()
    from bench.ingest_bench import write_results
    from bench.resources import code_version, machine_info
    from tools import deploy
    from tools.package import Target, build
    from tools.private_cluster import ClusterSampler, private_cluster

    run_id = uuid.uuid4().hex[:8]
    workdir = medistream_home().resolve() / "bench" / f"scaleout-{run_id}"
    workdir.mkdir(parents=True)
    began, load_before = time.monotonic(), os.getloadavg()
    built = args.zip.resolve() if args.zip else build(Target("3.12"), workdir / "dist")
    zip_path = own_name(built, workdir, run_id)
    python = str(deploy.ensure_runtime())
    print(f"run {run_id}: {args.records:,} records, sizes {args.sizes} KiB, parallelism {args.parallelism}, "
          f"zip {built.name}", flush=True)
    runs: list[dict[str, Any]] = []
    plan = [(kb, p) for kb in args.sizes for p in args.parallelism]

    def cluster_for(label: str) -> Any:
        return private_cluster(workdir / "cluster" / label, f"s3://medistream-warehouse/scaleout-{run_id}-{label}",
                               python, args.checkpoint_interval)

    def measure_one(settings: Any, sampler: Any, kb: int, p: int) -> None:
        tag = f"{run_id}k{kb}p{p}"
        prepared = prepare(tag, workdir / tag, args.records, kb, args.kafka_only)
        try:
            result = one_run(zip_path, settings, sampler, prepared, p, args.timeout)
        finally:
            removed = clean_up(prepared["cfg"])
        runs.append({"size_kb": kb, "publish_s": prepared["publish_s"], "published": prepared["published"],
                     "mean_payload_bytes": round(prepared["payload_bytes"] / args.records), **result,
                     "cleaned_up": removed})
        print(f"{kb} KB p{p}: {result['records_per_s']:,.1f} records/s, {result['records_per_cpu_s']:,.1f} per "
              f"CPU-second, exact: {result['exact']}", flush=True)

    failed = True
    try:
        if args.reuse_cluster:
            with cluster_for("all") as settings, ClusterSampler.of(settings) as sampler:
                for kb, p in plan:
                    measure_one(settings, sampler, kb, p)
        else:
            for kb, p in plan:
                with cluster_for(f"k{kb}p{p}") as settings, ClusterSampler.of(settings) as sampler:
                    measure_one(settings, sampler, kb, p)
        failed = False
    finally:
        shutil.rmtree(medistream_home() / "deploy" / zip_path.stem, ignore_errors=True)
        if failed:
            zip_path.unlink(missing_ok=True)
            shutil.rmtree(workdir / "dist", ignore_errors=True)
            print(f"cluster logs kept under {workdir / 'cluster'}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print_table(table_rows(runs))
    found_ratios = ratios(runs)
    for name, ratio in found_ratios.items():
        print(f"{name}: records/s x{ratio['records_per_s']}, records per CPU-second x{ratio['records_per_cpu_s']}")
    doc = {"benchmark": "cluster scale-out", "machine": machine_info(), "code": code_version(), "run_id": run_id,
           "zip": built.name, "records": args.records, "sizes_kb": args.sizes, "parallelism": args.parallelism,
           "seed": SEED, "duplicate_rate": DUPLICATE_RATE, "invalid_rate": INVALID_RATE,
           "feeds": "kafka only" if args.kafka_only else "every shipped feed (Kafka and landing files)",
           "checkpoint_interval": args.checkpoint_interval, "fresh_cluster_per_run": not args.reuse_cluster,
           "duration_s": round(time.monotonic() - began, 1),
           "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
           "runs": runs, "ratios": found_ratios,
           "notes": ["wall_s: from every vertex RUNNING until every expected Iceberg row (claims, payments, dead "
                     "letters) and archived record is committed, polled each second; the records were published "
                     "before the deploy.",
                     "cluster_cpu_s: user+system CPU of the JobManager and TaskManager JVMs and their children "
                     "(Python workers) over that window; records_per_cpu_s divides the records by it.",
                     "machine_busy_cores: every core's busy time over the window / wall: above cluster_cores "
                     "means other work shared the machine.",
                     "peak_rss_mib: each process with its children, from submission until the job stopped."]}
    path = write_results(doc, kind="cluster-scaleout")
    print(f"\nresults: {path}; took {doc['duration_s']:.0f} s")
    return 0 if runs and all(r["exact"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
