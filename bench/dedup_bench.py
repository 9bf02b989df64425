"""Dedup cost: Python keyed state (KeyedProcessFunction + ValueState) against Flink SQL's Deduplicate operator.

Run: `.venv/bin/python -m bench.dedup_bench [--records 200000] [--repeat 3] [--variants a,b,...]
[--key-format production|clear]`; docs/decisions/0004-dedup-state.md holds the figures. It
1. writes N rows (dedup_key, record_id, three small columns, a 4 KiB X12-like payload) to one local
   CSV file, deterministically, with 5 % exact duplicates (same dedup_key and payload, a new
   record_id) arriving within ~70 rows of their original; the key is udfs.dedup's (64 hex chars)
   unless --key-format clear (payer|claim id|frequency|digest, ~60 chars);
2. runs every variant in a fresh Python + JVM process (no JIT or heap carried between variants):
   filesystem source (continuous, so the job stays up after the last row) -> variant -> blackhole,
   parallelism 1, thread mode, exactly-once checkpoints every interval into a local hashmap backend;
3. measures from submit until the sink has counted every expected row and the dedup operator every
   input row (REST metrics, polled every 0.25 s): wall time and CPU seconds of the whole process
   tree (bench/resources.py);
4. then triggers one full checkpoint, which therefore holds every key, and divides its size on disk
   (all files of chk-<id>) and the dedup operator's reported state size by the number of keys;
5. asserts the sink saw exactly the unique keys and the dedup operator saw every input row.
Results print as a table and go to bench/results/dedup-<date>.json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tools.minicluster_rest import MiniClusterRest

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
SEED = 20_261_122
PAYLOAD_CHARS = 4096
DUPLICATE_RATE = 0.05
MAX_DUPLICATE_DISTANCE = 64
STATE_TTL_DAYS = 30
COLUMNS = ("dedup_key", "record_id", "feed", "record_type", "sent_at_ms", "payload")
VARIANT_TIMEOUT_S = 170.0

# name -> (what it is, the baseline whose cost it adds to, whether it drops duplicates)
VARIANTS: dict[str, tuple[str, str | None, bool]] = {
    "source-only": ("SQL filesystem source -> blackhole", None, False),
    "python-passthrough": ("source -> to_data_stream -> Python map -> from_data_stream -> blackhole", "source-only",
                           False),
    "python-keyed-state": ("python-passthrough + key_by -> KeyedProcessFunction(ValueState<bool>, TTL 30 d)",
                           "python-passthrough", True),
    "sql-from-datastream": ("python-passthrough + ROW_NUMBER() keep-first on proctime (Deduplicate, TTL 30 d)",
                            "python-passthrough", True),
    "sql-pure": ("SQL source + ROW_NUMBER() keep-first on proctime (Deduplicate, TTL 30 d)", "source-only", True),
}
KEY_FORMATS = ("production", "clear")


@dataclass(frozen=True)
class InputFacts:
    """What the generated file holds; the bench asserts its outputs against these."""

    path: str
    key_format: str
    records: int
    unique_keys: int
    duplicates: int
    max_duplicate_distance: int
    mean_key_chars: float
    file_bytes: int
    generate_s: float


def generate_input(directory: Path, n: int, key_format: str = "production", seed: int = SEED) -> InputFacts:
    """Write n rows to directory/claims.csv; the same n, key format and seed always give the same bytes.

    Key formats: "production" is udfs.dedup's key (business-key digest + content digest, 64 hex
    chars, nothing in clear); "clear" is payer|claim id|frequency|128-bit content digest (~60 chars).
    """
    from infra.local.static_keys import static_token_keys
    from udfs.dedup import dedup_keys
    from udfs.phi.tokens import Tokenizer

    linkage = Tokenizer(static_token_keys()).linkage
    start = time.perf_counter()
    rng = random.Random(seed)
    duplicates = round(n * DUPLICATE_RATE)
    unique = n - duplicates
    # An original at position u, its duplicate d records later (d + 0.5 sorts it after the original).
    order: list[tuple[float, int, bool]] = [(float(u), u, False) for u in range(unique)]
    for u in rng.sample(range(unique), duplicates):
        order.append((u + rng.randint(1, MAX_DUPLICATE_DISTANCE) + 0.5, u, True))
    order.sort()
    pool = base64.b64encode(rng.randbytes(1 << 20)).decode()  # filler: no ',' or '"', so plain CSV
    payers = [f"HP{rng.randrange(10**7):07d}" for _ in range(120)]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "claims.csv"
    key_chars = 0
    max_distance = 0
    first_position: dict[int, int] = {}
    with path.open("w", encoding="ascii", newline="\n") as out:
        for position, (_, u, is_duplicate) in enumerate(order):
            local = random.Random(seed * 1_000_003 + u)  # the original and its duplicate share content
            payer, freq = payers[u % len(payers)], "178"[u % 3]
            claim_id = f"CLM{u:012d}"
            sent_at_ms = 1_790_000_000_000 + u * 37
            head = (f"ISA*00*{payer}*ZZ*MEDISTREAM~GS*HC*{payer}*{sent_at_ms}~ST*837*{u:09d}~"
                    f"CLM*{claim_id}*{local.randrange(10**6) / 100:.2f}***11:B:{freq}~NTE*ADD*")
            offset = local.randrange(len(pool) - PAYLOAD_CHARS)
            payload = head + pool[offset:offset + PAYLOAD_CHARS - len(head) - 1] + "~"
            if key_format == "production":
                claim = {"payer": {"payer_id": payer}, "claim_id": claim_id, "frequency_code": freq, "x12": payload}
                dedup_key = dedup_keys(claim, "claim", linkage).dedup_key
            else:
                dedup_key = f"{payer}|{claim_id}|{freq}|{hashlib.sha256(payload.encode()).hexdigest()[:32]}"
            record_id = str(uuid.UUID(int=rng.getrandbits(128)))
            out.write(f"{dedup_key},{record_id},feed_{u % 120:03d},claim,{sent_at_ms},{payload}\n")
            key_chars += len(dedup_key)
            if is_duplicate:
                max_distance = max(max_distance, position - first_position[u])
            else:
                first_position[u] = position
    return InputFacts(path=str(path), key_format=key_format, records=n, unique_keys=unique, duplicates=duplicates,
                      max_duplicate_distance=max_distance, mean_key_chars=key_chars / n,
                      file_bytes=path.stat().st_size, generate_s=time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------
# One variant, in its own process (`--child`): build, run until every row is through, checkpoint, cancel.


Rest = MiniClusterRest  # the mini-cluster's REST API (tools/minicluster_rest.py)


def _python_dedup_function() -> Any:
    """The variant (a) operator: keep the first row per key in a ValueState<bool> with a 30-day TTL."""
    from pyflink.common import Time, Types
    from pyflink.datastream import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor

    class FirstSeen(KeyedProcessFunction):  # type: ignore[misc]
        """First occurrence of a key passes; later ones are dropped and counted."""

        def open(self, runtime_context: RuntimeContext) -> None:
            """Register the flag state (TTL from its creation, as in production) and the counter."""
            ttl = StateTtlConfig.new_builder(Time.days(STATE_TTL_DAYS)).update_ttl_on_create_and_write() \
                .never_return_expired().build()
            descriptor = ValueStateDescriptor("seen", Types.BOOLEAN())
            descriptor.enable_time_to_live(ttl)
            self.seen = runtime_context.get_state(descriptor)
            self.dropped = runtime_context.get_metrics_group().counter("duplicates_dropped")

        def process_element(self, row: Any, ctx: Any) -> Any:
            """Emit the row if its key is new; otherwise count it."""
            if self.seen.value() is None:
                self.seen.update(True)
                yield row
            else:
                self.dropped.inc()

    return FirstSeen()


_DEDUP_SQL = """INSERT INTO sink SELECT dedup_key, record_id, feed, record_type, sent_at_ms, payload FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY dedup_key ORDER BY proc_time ASC) AS rn FROM {source}) WHERE rn = 1"""


def build_variant(name: str, env: Any, t_env: Any, input_dir: Path) -> None:
    """Source table, blackhole sink and the variant between them, attached to `env`."""
    from pyflink.common import Types
    from pyflink.table import Schema

    columns = "dedup_key STRING, record_id STRING, feed STRING, record_type STRING, sent_at_ms BIGINT, payload STRING"
    # Continuous monitoring keeps the source (and so the keyed state) alive after the file is read.
    t_env.execute_sql(f"""CREATE TABLE src ({columns}, proc_time AS PROCTIME()) WITH ('connector' = 'filesystem',
        'path' = '{input_dir.as_uri()}', 'format' = 'csv', 'source.monitor-interval' = '1 s')""")
    t_env.execute_sql(f"CREATE TABLE sink ({columns}) WITH ('connector' = 'blackhole')")
    row_type = Types.ROW_NAMED(list(COLUMNS), [Types.STRING()] * 4 + [Types.LONG(), Types.STRING()])
    statements = t_env.create_statement_set()
    if name in ("source-only", "sql-pure"):
        statements.add_insert_sql(_DEDUP_SQL.format(source="src") if name == "sql-pure" else
                                  "INSERT INTO sink SELECT dedup_key, record_id, feed, record_type, sent_at_ms, "
                                  "payload FROM src")
    else:
        # The real job's records come out of a Python operator: an identity map stands in for it.
        rows = t_env.to_data_stream(t_env.sql_query(
            "SELECT dedup_key, record_id, feed, record_type, sent_at_ms, payload FROM src"))
        produced = rows.map(lambda row: row, output_type=row_type).name("python-map")
        if name == "python-passthrough":
            t_env.create_temporary_view("produced", t_env.from_data_stream(produced))
            statements.add_insert_sql("INSERT INTO sink SELECT * FROM produced")
        elif name == "python-keyed-state":
            deduped = produced.key_by(lambda row: row[0], key_type=Types.STRING()) \
                .process(_python_dedup_function(), output_type=row_type).name("python-dedup")
            t_env.create_temporary_view("deduped", t_env.from_data_stream(deduped))
            statements.add_insert_sql("INSERT INTO sink SELECT * FROM deduped")
        elif name == "sql-from-datastream":
            schema = Schema.new_builder().column_by_expression("proc_time", "PROCTIME()").build()
            t_env.create_temporary_view("produced", t_env.from_data_stream(produced, schema))
            statements.add_insert_sql(_DEDUP_SQL.format(source="produced"))
        else:
            raise ValueError(f"unknown variant {name!r}")
    statements.attach_as_datastream()



def _wait_for_counts(rest: Rest, targets: dict[tuple[str, str], int], timeout_s: float) -> None:
    """Poll operator counters every 0.25 s until each (operator, metric) has reached its target.

    Waiting for the sink alone is not enough after a dedup: trailing duplicates produce no output.
    """
    deadline = time.monotonic() + timeout_s
    counts: dict[str, dict[str, int]] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, KeyError, ValueError):  # REST not up yet, metrics not fetched yet
            status = rest.call("")["state"]
            if status in ("FAILED", "CANCELED", "FINISHED"):
                raise RuntimeError(f"job ended with {status}; counters: {counts}")
            counts = rest.operator_counts()
            if all(counts.get(op, {}).get(metric, 0) >= n for (op, metric), n in targets.items()):
                return
        time.sleep(0.25)
    raise TimeoutError(f"counters {counts} did not reach {targets} within {timeout_s:.0f} s")


def run_child(name: str, input_dir: Path, facts: dict[str, int], workdir: Path, interval_ms: int) -> dict[str, Any]:
    """Build and run one variant, checkpoint once all rows are through, then cancel; return its figures."""
    from bench.resources import TreeSampler
    from connectors.iceberg import S3Config
    from connectors.properties import CheckpointConfig, RuntimeConfig
    from jobs.runtime import flink_configuration, prepare_process_environment

    prepare_process_environment()
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import EnvironmentSettings, StreamTableEnvironment

    from infra.local.process import free_loopback_port

    port = free_loopback_port()
    checkpoints = CheckpointConfig(directory=(workdir / "checkpoints").as_uri(), interval_ms=interval_ms,
                                   timeout_ms=120_000)
    conf = flink_configuration(checkpoints, RuntimeConfig(parallelism=1, python_execution_mode="thread"),
                               S3Config(endpoint="", region="us-east-1", path_style_access=True), None)
    for key, value in {"rest.port": str(port), "metrics.fetcher.update-interval": "250 ms",
                       "io.tmp.dirs": str(workdir / "io"), "table.exec.state.ttl": f"{STATE_TTL_DAYS} d"}.items():
        conf.set_string(key, value)
    (workdir / "io").mkdir(parents=True, exist_ok=True)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
    build_variant(name, env, t_env, input_dir)
    dedups = VARIANTS[name][2]
    records, unique, duplicates = facts["records"], facts["unique_keys"], facts["duplicates"]
    expected = unique if dedups else records
    dedup_op = ("python-dedup" if name == "python-keyed-state" else "Deduplicate") if dedups else None
    targets = {("sink__Writer", "numRecordsIn"): expected} | ({(dedup_op, "numRecordsIn"): records} if dedup_op else {})

    with TreeSampler() as sampler:
        start = time.perf_counter()
        client = env.execute_async(f"dedup-bench-{name}")
        rest = Rest(port, str(client.get_job_id()))
        _wait_for_counts(rest, targets, VARIANT_TIMEOUT_S)
        wall = time.perf_counter() - start
    done_ms = time.time() * 1000
    vertices = rest.call("")["vertices"]
    tasks_started_ms = max(v["start-time"] for v in vertices)
    vertex_names = {v["id"]: v["name"] for v in vertices}
    try:
        checkpoint = rest.checkpoint_now()
        time.sleep(0.75)  # > 2 metric fetch intervals: the counts below are from after the checkpoint
        counts = rest.operator_counts()
        periodic = rest.call("/checkpoints")["counts"]
    finally:
        client.cancel().result()

    chk_dir = Path(checkpoint["external_path"].removeprefix("file:"))
    files = [p for p in chk_dir.rglob("*") if p.is_file()]
    disk_bytes = sum(p.stat().st_size for p in files)
    # The dedup operator's vertex (chained with a Calc/conversion and the stateless blackhole writer).
    dedup_state = sum(task["state_size"] for vertex_id, task in checkpoint["tasks"].items()
                      if dedup_op and dedup_op in vertex_names[vertex_id]) if dedup_op else None
    sink_out = counts.get("sink__Writer", {}).get("numRecordsIn", -1)
    source_out = counts.get("Source__src", {}).get("numRecordsOut", -1)
    dedup_in = dropped = None
    if dedup_op:
        dedup_in = counts[dedup_op]["numRecordsIn"]
        dropped = (counts[dedup_op]["duplicates_dropped"] if dedup_op == "python-dedup"
                   else counts[dedup_op]["numRecordsIn"] - counts[dedup_op]["numRecordsOut"])
    failures = []
    if source_out != records:
        failures.append(f"source emitted {source_out:,}, file holds {records:,}")
    if sink_out != expected:
        failures.append(f"sink received {sink_out:,}, expected {expected:,} ({'unique keys' if dedups else 'rows'})")
    if dedups and (dedup_in != records or dropped != duplicates):
        failures.append(f"dedup saw {dedup_in} rows and dropped {dropped}, expected {records:,} and {duplicates:,}")
    cpu = sampler.usage.cpu_s
    return {
        "variant": name, "description": VARIANTS[name][0], "records": records, "expected_out": expected,
        "wall_s": wall, "tasks_started_to_done_s": (done_ms - tasks_started_ms) / 1000, "cpu_s": cpu,
        "cores_busy": cpu / wall, "records_per_s": records / wall, "records_per_cpu_s": records / cpu,
        "cpu_us_per_record": cpu / records * 1e6, "peak_rss_mib": sampler.usage.peak_rss_bytes / 2**20,
        "peak_jvm_rss_mib": sampler.usage.peak_child_rss_bytes / 2**20,
        "sink_out": sink_out, "dedup_in": dedup_in, "duplicates_dropped": dropped, "operators": counts,
        "checkpoint": {"id": checkpoint["id"], "path_files": len(files), "disk_bytes": disk_bytes,
                       "state_size": checkpoint["state_size"], "end_to_end_ms": checkpoint["end_to_end_duration"],
                       "per_vertex_state_size": {t: v["state_size"] for t, v in checkpoint["tasks"].items()},
                       "dedup_vertex_state_size": dedup_state},
        "periodic_checkpoints": periodic,
        "state_bytes_per_key_disk": disk_bytes / unique if dedups else None,
        "dedup_state_bytes_per_key": dedup_state / unique if dedup_state else None,
        "failures": failures, "ok": not failures,
    }


# ---------------------------------------------------------------------------------------------------
# The driver: generate once, one child process per (variant, repeat), summarise, record.


def run_variant_process(name: str, facts: InputFacts, workdir: Path, interval_ms: int) -> dict[str, Any]:
    """`python -m bench.dedup_bench --child <name> ...` with its output in workdir/run.log."""
    workdir.mkdir(parents=True)
    spec = json.dumps({"records": facts.records, "unique_keys": facts.unique_keys, "duplicates": facts.duplicates})
    command = [sys.executable, "-m", "bench.dedup_bench", "--child", name, "--input-dir",
               str(Path(facts.path).parent), "--facts", spec, "--workdir", str(workdir),
               "--checkpoint-interval-ms", str(interval_ms)]
    log = workdir / "run.log"
    with log.open("w") as out:
        try:
            subprocess.run(command, cwd=BENCH_DIR.parent, stdout=out, stderr=subprocess.STDOUT,
                           timeout=VARIANT_TIMEOUT_S + 120, check=False)
        except subprocess.TimeoutExpired:
            pass
    lines = log.read_text(errors="replace").splitlines()
    for line in reversed(lines):
        if line.startswith("RESULT "):
            return dict(json.loads(line.removeprefix("RESULT ")))
    return {"variant": name, "ok": False, "failures": ["no result; log tail:", *lines[-25:]]}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarise(runs: list[dict[str, Any]], records: int) -> list[dict[str, Any]]:
    """Per variant: medians over repeats, and the CPU it adds to its baseline per record."""
    summary: list[dict[str, Any]] = []
    by_name = {name: [r for r in runs if r["variant"] == name and r.get("ok")] for name in VARIANTS}
    cpu = {name: _median([r["cpu_s"] for r in ok]) for name, ok in by_name.items() if ok}
    for name, ok in by_name.items():
        if not ok:
            continue
        baseline = VARIANTS[name][1]
        added = cpu[name] - cpu[baseline] if baseline in cpu else None
        per_key = [r["dedup_state_bytes_per_key"] for r in ok if r["dedup_state_bytes_per_key"]]
        per_key_disk = [r["state_bytes_per_key_disk"] for r in ok if r["state_bytes_per_key_disk"]]
        summary.append({
            "variant": name, "description": VARIANTS[name][0], "repeats": len(ok), "baseline": baseline,
            "wall_s": _median([r["wall_s"] for r in ok]),
            "tasks_started_to_done_s": _median([r["tasks_started_to_done_s"] for r in ok]),
            "cpu_s": cpu[name], "records_per_s": records / _median([r["wall_s"] for r in ok]),
            "records_per_cpu_s": records / cpu[name],
            "added_cpu_us_per_record": added / records * 1e6 if added is not None else None,
            "added_records_per_cpu_s": records / added if added and added > 0 else None,
            "state_bytes_per_key": _median(per_key) if per_key else None,
            "checkpoint_bytes_per_key": _median(per_key_disk) if per_key_disk else None,
            "checkpoint_disk_bytes": _median([r["checkpoint"]["disk_bytes"] for r in ok]),
            "output": ok[0]["sink_out"], "duplicates_dropped": ok[0]["duplicates_dropped"],
            "peak_rss_mib": _median([r["peak_rss_mib"] for r in ok]),
        })
    return summary


def print_table(summary: list[dict[str, Any]]) -> None:
    """One line per variant (medians over repeats)."""
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    header = ("variant", "wall s", "CPU s", "rec/s", "rec/CPU-s", "+CPU µs/rec", "step rec/CPU-s",
              "state B/key", "chk B/key", "output", "dropped", "RSS MiB")
    rows = [header]
    for s in summary:
        rows.append((s["variant"], num(s["wall_s"], ".1f"), num(s["cpu_s"], ".1f"), num(s["records_per_s"], ",.0f"),
                     num(s["records_per_cpu_s"], ",.0f"), num(s["added_cpu_us_per_record"], ",.0f"),
                     num(s["added_records_per_cpu_s"], ",.0f"), num(s["state_bytes_per_key"], ".1f"),
                     num(s["checkpoint_bytes_per_key"], ".1f"), f"{s['output']:,}",
                     num(s["duplicates_dropped"], ","), num(s["peak_rss_mib"], ",.0f")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths,
                                                                                                   strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def write_results(doc: dict[str, Any]) -> Path:
    """bench/results/dedup-<date>.json, numbered when the day already has one."""
    from bench.ingest_bench import write_results as write_named

    return write_named(doc, kind="dedup")


NOTES = [
    "Each (variant, repeat) runs in a fresh Python process with its own JVM; figures are medians over repeats.",
    "wall s: execute_async() until the blackhole writer's numRecordsIn reached the expected count and the dedup "
    "operator's numRecordsIn every row (REST, polled every 0.25 s, metrics fetched every 0.25 s): includes "
    "mini-cluster start and the source's first 1 s directory scan.",
    "CPU s: user+system seconds of the child process tree (Python + the JVM hosting the thread-mode Python "
    "operators) over the same window (bench/resources.py TreeSampler). rec/CPU-s = records / CPU s.",
    "+CPU µs/rec: (CPU s of the variant - CPU s of its baseline) / records; step rec/CPU-s is its inverse: "
    "what the added step (the dedup, or for python-passthrough the Python operator) alone costs. "
    "python-keyed-state and sql-from-datastream are measured against "
    "python-passthrough (source -> Python map -> table), sql-pure against source-only.",
    "state B/key: state_size the dedup operator's vertex reported for a full checkpoint triggered (REST POST "
    "/jobs/<id>/checkpoints) after every row had reached the sink, divided by the unique keys. The source "
    "stays open (continuous filesystem monitoring), so that checkpoint holds every key; the hashmap backend "
    "writes full snapshots, so its files are the whole state. chk B/key: all files of that chk-<id> folder "
    "on disk (incl. _metadata and the source's split state) divided by the unique keys.",
    "Checks (must hold, else exit 1): source emitted every row; sink received exactly the unique keys "
    "(dedup) or every row (baselines); the dedup operator saw every row and dropped exactly the duplicates "
    "(Python: the duplicates_dropped counter; SQL: Deduplicate numRecordsIn - numRecordsOut).",
]


def main(argv: list[str] | None = None) -> int:
    """Generate, run every variant (repeats interleaved), print the table, write the JSON; 1 on a failed check."""
    parser = argparse.ArgumentParser(prog="python -m bench.dedup_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000, help="rows in the input (default 200000)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--key-format", choices=KEY_FORMATS, default="production",
                        help="production: udfs.dedup keys, 64 hex chars (default); clear: payer|claim|freq|digest")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant, interleaved (default 1)")
    parser.add_argument("--checkpoint-interval-ms", type=int, default=None,
                        help="periodic checkpoint interval (default: the local properties' checkpoints group)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--input-dir", help=argparse.SUPPRESS)
    parser.add_argument("--facts", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = run_child(args.child, Path(args.input_dir), json.loads(args.facts), Path(args.workdir),
                           args.checkpoint_interval_ms)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or args.records < 100 or args.repeat < 1:
        parser.error(f"unknown variants {unknown}" if unknown else "--records >= 100 and --repeat >= 1")

    from bench.resources import code_version, machine_info
    from connectors.properties import LOCAL_PROPERTIES, load_ingest_config, medistream_home, read_property_groups

    interval_ms = args.checkpoint_interval_ms or load_ingest_config(
        read_property_groups(LOCAL_PROPERTIES)).checkpoints.interval_ms
    began, load_before = time.perf_counter(), os.getloadavg()
    run_id = uuid.uuid4().hex[:8]
    workdir = medistream_home() / "tmp" / f"dedup-bench-{run_id}"
    (workdir / "tmp").mkdir(parents=True)
    os.environ["TMPDIR"] = str(workdir / "tmp")  # children inherit it: PyFlink leaves python-dist-* behind
    runs: list[dict[str, Any]] = []
    try:
        facts = generate_input(workdir / "input", args.records, args.key_format)
        print(f"run {run_id}: {facts.records:,} rows ({facts.file_bytes / 2**20:,.0f} MiB), {facts.unique_keys:,} "
              f"keys ({facts.mean_key_chars:.0f} chars, {facts.key_format}), {facts.duplicates:,} duplicates; "
              f"generated in {facts.generate_s:.1f} s", flush=True)
        for repeat in range(args.repeat):
            for name in names:
                run = run_variant_process(name, facts, workdir / f"{name}-{repeat}", interval_ms)
                shutil.rmtree(workdir / f"{name}-{repeat}" / "checkpoints", ignore_errors=True)
                runs.append({"repeat": repeat, **run})
                state = f", {run['dedup_state_bytes_per_key']:.1f} B/key" if run.get("dedup_state_bytes_per_key") \
                    else ""
                print(f"{name} #{repeat + 1}: " + (f"{run['records_per_cpu_s']:,.0f} rec/CPU-s, wall "
                      f"{run['wall_s']:.1f} s{state}" if run.get("ok") else "FAILED: " + "\n  ".join(
                          run["failures"])), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = summarise(runs, facts.records)
    print()
    print_table(summary)
    doc: dict[str, Any] = {"machine": machine_info(), "code": code_version(), "run_id": run_id,
                           "input": asdict(facts),
           "settings": {"parallelism": 1, "python_execution_mode": "thread", "state_backend": "hashmap",
                        "checkpoint_interval_ms": interval_ms, "checkpointing_mode": "EXACTLY_ONCE",
                        "state_ttl_days": STATE_TTL_DAYS, "repeat": args.repeat, "variants": names},
           "duration_s": round(time.perf_counter() - began, 1),
           "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
           "summary": summary, "runs": runs, "notes": NOTES}
    path = write_results(doc)
    print(f"\nresults: {path.relative_to(BENCH_DIR.parent)}; took {doc['duration_s']:.0f} s; load average "
          f"before {load_before[0]:.1f}, after {doc['load_average_1_5_15']['after'][0]:.1f}")
    return 0 if runs and all(r.get("ok") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
