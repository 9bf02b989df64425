"""The REST ingestion API under load on loopback: accepted records/s (single and batched) and request latency.

    python -u -m bench.ingest_api_bench [--seconds 20] [--concurrency 16] [--batch 100] [--size-kb 4]

Needs the local stack. The API runs as its own process (`python -m jobs.ingest_api serve`), as in
production, with run-unique feeds (the shipped hospital_a_claims contract with the rest door), keys in
the local Secrets Manager, and every accepted record acknowledged by the broker before the 202. The
load generator (aiohttp, in this process) posts synthetic 4 KB claim-shaped JSON for a fixed time.
Reports records/s, records/s per API CPU-second, and request latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from bench.resources import machine_info
from bench.sink_checks import percentiles

REPO_ROOT = Path(__file__).resolve().parent.parent


def _record(n: int, size: int) -> dict[str, Any]:
    return {"record_id": f"bench-{n}", "claim_id": f"C-{n}", "notes": "x" * max(0, size - 80)}


async def _load(url: str, key: str, seconds: float, concurrency: int, batch: int, size: int) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    accepted = refused = 0
    stop_at = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted, refused
        while time.monotonic() < stop_at:
            docs = [_record(next(counter), size) for _ in range(batch)]
            body = json.dumps(docs if batch > 1 else docs[0]).encode()
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers={"Authorization": f"Bearer {key}",
                                                             "Content-Type": "application/json"}) as answer:
                await answer.read()
                if answer.status == 202:
                    accepted += batch
                    latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    refused += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        began = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.monotonic() - began
    return {"records": accepted, "refused_requests": refused, "wall_s": round(wall, 2),
            "records_per_s": round(accepted / wall, 1), "requests": len(latencies),
            "latency_ms": percentiles(latencies)}


def main(argv: list[str] | None = None) -> int:
    """Start the API, load it single and batched, print and record the results."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_api_bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--size-kb", type=float, default=4)
    args = parser.parse_args(argv)
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_REGION", "us-east-1")):
        os.environ.setdefault(name, value)
    import yaml

    from connectors.kafka import create_missing_topics
    from connectors.properties import read_property_groups
    from infra.local.isolation import write_properties
    from jobs.ingest_api import add_key, wait_until_serving
    from schemas.contracts import FEEDS_DIR

    run = uuid.uuid4().hex[:8]
    home = Path(os.environ.get("MEDISTREAM_HOME", ".local")).resolve() / "bench-ingest-api" / run
    properties = write_properties(run, home)
    feed = f"t{run}_hospital_a_claims"
    contract = yaml.safe_load((FEEDS_DIR / "hospital_a_claims.yaml").read_text())
    contract |= {"feed": feed, "sources": ["kafka", "rest"]}
    feeds_dir = home / "rest-feeds"
    feeds_dir.mkdir()
    (feeds_dir / f"{feed}.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
    documents = json.loads(properties.read_text())
    for group in documents:
        if group["PropertyGroupId"] == "feeds":
            group["PropertyMap"]["contracts.dir"] = str(feeds_dir)
    documents.append({"PropertyGroupId": "ingest_api", "PropertyMap": {
        "keys.secret": f"medistream/ingest-api/bench-{run}", "idempotency.table": f"ingest-idem-bench-{run}",
        "rate": "100000", "burst": "100000", "max.batch": str(max(1000, args.batch))}})
    properties.write_text(json.dumps(documents))
    groups = read_property_groups(properties)
    key = add_key(groups, feed)
    create_missing_topics(groups["kafka"]["bootstrap.servers"], [f"raw.{feed}"])
    port = 18190
    log = (home / "api.log").open("wb")
    api = subprocess.Popen([sys.executable, "-m", "jobs.ingest_api", "--properties", str(properties), "serve",
                            "--port", str(port)], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1/feeds/{feed}/records"
    try:
        def check() -> None:
            if api.poll() is not None:
                raise RuntimeError(f"the API did not start; see {home}/api.log")

        wait_until_serving(port, check)
        proc = psutil.Process(api.pid)
        results = []
        for name, batch in (("single", 1), (f"batch of {args.batch}", args.batch)):
            cpu0 = sum(proc.cpu_times()[:2])
            result = asyncio.run(_load(url, key, args.seconds, args.concurrency, batch, int(args.size_kb * 1024)))
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            result |= {"mode": name, "api_cpu_s": round(cpu, 1),
                       "records_per_api_cpu_s": round(result["records"] / cpu, 1) if cpu else None}
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        api.terminate()
        api.wait(30)
    out = Path(__file__).parent / "results" / f"ingest-api-{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps({"machine": machine_info(), "concurrency": args.concurrency,
                               "size_kb": args.size_kb, "results": results}, indent=2) + "\n")
    print(f"\n{'mode':<16}{'records/s':>11}{'per API CPU-s':>15}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for r in results:
        lat = r["latency_ms"]
        print(f"{r['mode']:<16}{r['records_per_s']:>11}{r['records_per_api_cpu_s']!s:>15}"
              f"{lat.get('p50', 0):>9}{lat.get('p95', 0):>9}{lat.get('p99', 0):>9}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
