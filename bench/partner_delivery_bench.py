"""Partner delivery: deliveries/s against the stand-in at its limit, and curated topic -> partner delay.

    python -u -m bench.partner_delivery_bench [--limits 50,200] [--seconds 40] [--latency-rate 40]

Needs the local stack (./medistream stack up). Each phase is one run of the real job
(`python -m jobs.partner_delivery`, process mode, parallelism 2) against the partner stand-in on
loopback, with the shipped clearwater_health contract at the stand-in's limit:
1. throughput, per limit L: L x seconds curated records are on the topic before the job starts;
   deliveries/s = new deliveries / (last - first delivery, server clock), against L (goal: within 5 %,
   never over), with the stand-in's 429 count and its busiest one-second window;
2. delay: records are committed to the curated topic at a steady `latency-rate`/s (below the limit)
   and the delay is partner receipt (stand-in wall clock) - transaction commit, P50/P95/P99.
Records are synthetic. A pool of protected records is generated once and re-keyed per run
(business key suffix), so each delivery is a distinct idempotency key.
CPU is the job's process tree (JVM + Python workers), sampled with psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from bench.resources import machine_info
from bench.sink_checks import percentiles

POOL = 200


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/v1/_stats", timeout=30) as answer:  # noqa: S310 - loopback stand-in
        stats: dict[str, Any] = json.loads(answer.read())
    return stats


def _rekeyed(pool: list[dict[str, Any]], n: int, tag: str) -> Iterator[dict[str, Any]]:
    for i in range(n):
        doc = dict(pool[i % len(pool)])
        doc["business_key"] = f"{doc['business_key']}-{tag}{i}"
        yield doc


class _JobCpu:
    """CPU seconds of a process tree, sampled until stopped (children that exit keep their last sample)."""

    def __init__(self, pid: int) -> None:
        self.root, self.last, self._stop = psutil.Process(pid), dict[int, float](), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            for proc in procs:
                try:
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                self.last[proc.pid] = times.user + times.system

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.last.values())


def _phase(name: str, pool: list[dict[str, Any]], limit: float, records: int, offered_rate: float | None,
           workdir: Path) -> dict[str, Any]:
    from connectors.kafka import create_missing_topics
    from connectors.kms import aws_client
    from connectors.properties import read_property_groups
    from infra.local.partner.curated import produce
    from infra.local.partner.harness import (
        PARTNER,
        delivery_properties,
        provision_credentials,
        standin_config,
        write_contract,
    )
    from infra.local.partner.server import start_in_thread
    from jobs.partner_delivery import load_delivery_config
    from tools.job_processes import JobProcesses

    burst = max(2, int(limit // 5))
    standin = standin_config(limit, burst)
    partner = start_in_thread(standin)
    run_id = uuid.uuid4().hex[:8]
    home = workdir / f"{name}-{run_id}"
    contracts = write_contract(home / "partners", rate_limit={"requests_per_second": limit, "burst": burst})
    properties = delivery_properties(run_id, home, partner.url, contracts)
    cfg = load_delivery_config(read_property_groups(properties))
    provision_credentials(aws_client(cfg.phi, "secretsmanager"), cfg.contracts[PARTNER], standin)
    topic = cfg.topic(PARTNER)
    create_missing_topics(cfg.bootstrap_servers, [topic])
    committed_at: dict[str, float] = {}
    producer_thread = None
    if offered_rate is None:  # throughput: the whole backlog is there before the job starts
        produce(cfg.bootstrap_servers, topic, _rekeyed(pool, records, run_id), f"bench-{run_id}")
    else:
        warm = 10  # the job is up and delivering before the measured records start
        produce(cfg.bootstrap_servers, topic, _rekeyed(pool, warm, f"warm{run_id}"), f"bench-{run_id}")
        records += warm

        def steady() -> None:
            while _stats(partner.url)["deliveries"] < warm:
                time.sleep(0.2)
            batch, docs = 10, list(_rekeyed(pool, records - warm, run_id))
            start = time.monotonic()
            for i in range(0, len(docs), batch):
                time.sleep(max(0.0, start + i / offered_rate - time.monotonic()))
                chunk = docs[i:i + batch]
                produce(cfg.bootstrap_servers, topic, chunk, f"bench-{run_id}")
                now = time.time()
                committed_at.update((d["business_key"], now) for d in chunk)

        producer_thread = threading.Thread(target=steady, daemon=True)
    jobs = JobProcesses(properties, home / "logs")
    jobs.start("delivery")
    cpu = _JobCpu(jobs.procs["delivery"].pid)
    if producer_thread is not None:
        producer_thread.start()
    began = time.monotonic()
    try:
        while _stats(partner.url)["deliveries"] < records:
            jobs.check_alive()
            if time.monotonic() - began > records / limit * 3 + 180:
                raise TimeoutError(f"{name}: only {_stats(partner.url)['deliveries']} of {records} arrived")
            time.sleep(1)
        cpu_s = cpu.stop()
        stats = _stats(partner.url)
    finally:
        jobs.stop_all()
        partner.stop()
    rate = (stats["deliveries"] - 1) / stats["delivered_span_s"] if stats["delivered_span_s"] else 0.0
    result: dict[str, Any] = {
        "phase": name, "limit_per_s": limit, "burst": burst, "records": records,
        "deliveries": stats["deliveries"], "exactly_once": set(stats["deliveries_by_business_key"].values()) == {1},
        "deliveries_per_s": round(rate, 2), "share_of_limit": round(rate / limit, 4),
        "rate_limited_429": stats["by_status"].get("429", 0), "max_admitted_per_1s": stats["max_admitted_per_1s"],
        "job_cpu_s": round(cpu_s, 1), "deliveries_per_cpu_s": round(records / cpu_s, 1) if cpu_s else None,
    }
    if committed_at:
        delays = [stats["first_delivered_at"][bk] - t for bk, t in committed_at.items()
                  if bk in stats["first_delivered_at"]]
        result |= {"offered_per_s": offered_rate, "delay_s": percentiles(delays)}
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the phases, print a table and write bench/results/partner-delivery-<date>.json."""
    parser = argparse.ArgumentParser(prog="python -m bench.partner_delivery_bench", description=__doc__)
    parser.add_argument("--limits", default="50,200", help="stand-in limits (requests/s) for the throughput phase")
    parser.add_argument("--seconds", type=float, default=40, help="backlog size in seconds of the limit")
    parser.add_argument("--latency-rate", type=float, default=40, help="steady offered rate for the delay phase")
    parser.add_argument("--latency-seconds", type=float, default=60)
    args = parser.parse_args(argv)
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_REGION", "us-east-1")):
        os.environ.setdefault(key, value)
    from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups
    from infra.local.partner.curated import curated_messages
    from infra.local.partner.harness import PARTNER

    workdir = Path(os.environ.get("MEDISTREAM_HOME", ".local")).resolve() / "bench-partner"
    pool = list(curated_messages(POOL, 23, load_phi_config(read_property_groups(LOCAL_PROPERTIES)), PARTNER))
    results = []
    for limit in (float(x) for x in args.limits.split(",")):
        results.append(_phase(f"throughput-{limit:g}", pool, limit, int(limit * args.seconds), None, workdir))
        print(json.dumps(results[-1]), flush=True)
    latency_limit = args.latency_rate * 1.25
    results.append(_phase("delay", pool, latency_limit, int(args.latency_rate * args.latency_seconds),
                          args.latency_rate, workdir))
    print(json.dumps(results[-1]), flush=True)
    out = Path(__file__).parent / "results" / f"partner-delivery-{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps({"machine": machine_info(), "results": results}, indent=2) + "\n")
    print(f"\n{'phase':<18}{'limit/s':>9}{'deliv/s':>9}{'of limit':>10}{'429s':>6}{'max 1s':>8}{'per CPU-s':>11}")
    for r in results:
        print(f"{r['phase']:<18}{r['limit_per_s']:>9g}{r['deliveries_per_s']:>9}{r['share_of_limit']:>10.1%}"
              f"{r['rate_limited_429']:>6}{r['max_admitted_per_1s']:>8}{r['deliveries_per_cpu_s']!s:>11}")
    if "delay_s" in results[-1]:
        print(f"delay curated commit -> partner receipt at {args.latency_rate:g}/s: {results[-1]['delay_s']}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
