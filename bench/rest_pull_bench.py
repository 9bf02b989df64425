"""REST puller throughput: records/s and per-page commit latency, pulling the stand-in into raw.<feed>.

    .venv/bin/python -u -m bench.rest_pull_bench [--records 20000] [--page-sizes 100,500]

For each page size: a fresh pull stand-in process (no rate limit to speak of, no faults) seeded with
synthetic 4-12 KB claims, a run-unique feed, cursor topic and transactional id, then one
`rest-pull run --once` in this process until caught up. Reports records/s, records per puller
CPU-second (this process only: the stand-in is its own process), and P50/P95/P99 of the time per
page (fetch + one Kafka transaction holding its records and cursor), from the puller's own log
events. Everything binds 127.0.0.1; the stand-in is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.resources import code_version, machine_info
from bench.sink_checks import percentiles
from connectors.kms import aws_client
from connectors.properties import LOCAL_PROPERTIES, load_phi_config, local_aws_environment, read_property_groups
from infra.local.pull_api import harness
from jobs.rest_pull import pull_until_caught_up

RESULTS = Path(__file__).resolve().parent / "results"


class _PageClock(logging.Handler):
    """Wall time of each "page N committed" event of the puller's log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stamps: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "committed records=" in record.getMessage():
            self.stamps.append(time.perf_counter())


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_case(records: int, page_size: int, home: Path, payloads: list[bytes]) -> dict[str, Any]:
    """Pull `records` at `page_size` per page from a fresh stand-in; the case's figures."""
    run = uuid.uuid4().hex[:8]
    api = harness.start_process(home / f"api-{page_size}", rate=100_000, burst=10_000)
    try:
        for start in range(0, records, 2_000):  # the stand-in takes appends of up to 64 MiB
            harness.append_records(api.url, payloads[start:min(start + 2_000, records)])
        secrets = aws_client(load_phi_config(read_property_groups(LOCAL_PROPERTIES)), "secretsmanager")
        secret = f"medistream/bench/rest-pull/{run}"
        harness.provision_credentials(secrets, secret, api)
        feed = f"t{run}_hospital_a_claims"
        contracts = harness.write_contracts(home / f"feeds-{run}", run)
        group = harness.pull_group(run, {feed: secret}, api.url, page_size=page_size)
        props = harness.write_pull_properties(home / f"pull-{run}.json", group, contracts)
        clock = _PageClock()
        logging.getLogger("medistream.rest_pull").addHandler(clock)
        cpu0, started = _cpu_s(), time.perf_counter()
        summary = pull_until_caught_up(props, feed)
        elapsed, cpu = time.perf_counter() - started, _cpu_s() - cpu0
        logging.getLogger("medistream.rest_pull").removeHandler(clock)
        got = summary["feeds"][feed]
        if summary["failed"] or got["records"] != records:
            raise RuntimeError(f"pull incomplete: {summary}")
        gaps = [(b - a) * 1000 for a, b in zip([started, *clock.stamps[:-1]], clock.stamps, strict=True)]
        return {"page_size": page_size, "records": records, "pages": got["pages"], "seconds": round(elapsed, 2),
                "records_per_s": round(records / elapsed, 1), "pages_per_s": round(got["pages"] / elapsed, 1),
                "records_per_cpu_s": round(records / cpu, 1), "cpu_s": round(cpu, 2),
                "page_ms": percentiles(gaps), "served": harness.stats(api.url)}
    finally:
        api.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rest_pull_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--page-sizes", default="100,500")
    args = parser.parse_args(argv)
    local_aws_environment()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("medistream.rest_pull").setLevel(logging.INFO)
    sizes = [int(s) for s in args.page_sizes.split(",")]
    print(f"== generating {args.records} synthetic claims (4-12 KB)")
    payloads = [g.payload for g in harness.synthetic_records("bench_claims", args.records, seed=7)]
    mean_kb = sum(map(len, payloads)) / len(payloads) / 1024
    cases = []
    with tempfile.TemporaryDirectory(prefix="rest-pull-bench-") as tmp:
        for size in sizes:
            case = run_case(args.records, size, Path(tmp), payloads)
            cases.append(case)
            p = case["page_ms"]
            print(f"page size {size:>4}: {case['records_per_s']:>8.0f} records/s  "
                  f"{case['records_per_cpu_s']:>8.0f} records per puller CPU-s  "
                  f"page P50 {p['p50']:.1f} ms  P95 {p['p95']:.1f} ms  P99 {p['p99']:.1f} ms  ({case['pages']} pages)")
    result = {"bench": "rest_pull", "at": datetime.now(UTC).isoformat(timespec="seconds"),
              "mean_record_kb": round(mean_kb, 2), "cases": cases, "machine": machine_info(),
              "code": code_version()}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"rest-pull-{datetime.now(UTC):%Y-%m-%d}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"== written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
