"""The monthly cost model of docs/cost.md: measured throughput from bench/results, prices and shares as assumptions.

`python -m infra.aws.cost_model` prints the tables docs/cost.md holds (a test keeps the two equal). Every
measured input names its results file; every price is an assumption (this machine has no internet, so
none was checked against AWS's price pages) and is listed with the value used; every share of traffic
the repository does not measure (how records arrive, how many go to partners) is an assumption too.
Compute is sized from records per CPU-second (one KPU or Fargate vCPU = one CPU), linearly, no headroom.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from connectors.properties import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results"
ARCHIVE_CODECS = "archive-codecs-2026-12-06.json"  # the archive's bytes per record (bench.archive_codec_bench)
SECONDS_PER_MONTH = 30 * 86400
RATES = (25_000, 150_000)
SIZES_KB = (4, 12)
BUDGET = 40_000

# Prices, USD, us-east-1 as remembered from AWS's public price pages in 2025: assumptions, not checked here.
PRICES = {
    "msf_kpu_hour": 0.11, "msf_storage_gb_month": 0.10, "msk_broker_hour_m7g_xlarge": 0.41,
    "msk_storage_gb_month": 0.10, "s3_standard_gb_month": 0.023, "s3_glacier_ir_gb_month": 0.004,
    "s3_put_per_1000": 0.005, "dynamodb_write_per_million": 0.625, "transfer_endpoint_hour": 0.30,
    "transfer_upload_gb": 0.04, "apigw_rest_per_million": 3.50, "waf_per_million": 0.60, "waf_monthly": 10.0,
    "nlb_hour": 0.0225, "nlb_lcu_hour": 0.006, "fargate_vcpu_hour": 0.04048, "fargate_gb_hour": 0.004445,
    "endpoint_az_hour": 0.01, "cross_az_gb": 0.02, "nat_hour": 0.045, "nat_gb": 0.045,
    "cloudtrail_data_events_per_100k": 0.10, "logs_ingest_gb": 0.50, "kms_key_month": 1.0,
    "aurora_iopt_acu_hour": 0.16, "aurora_iopt_storage_gb_month": 0.225,
}
# Shares and sizes the repository does not measure: assumptions.
SHARES = {
    "via_kafka_or_rest": 0.5,  # records arriving as Kafka/REST messages; the rest come as SFTP files
    "via_rest": 0.25,  # of all records, pushed to the ingest API (in batches of REST_BATCH)
    "to_partners": 0.10,  # records delivered to a partner API
    "pulled": 0.10,  # records the REST and SFTP pullers fetch from partners (through NAT)
    "broker_ingress_mb_s": 100.0,  # sustained producer MB/s one kafka.m7g.xlarge broker takes at RF 3
    "kafka_retention_h": 24.0,  # raw and curated topics (the broker default is 168 h: see the note)
    "lake_compression": 4.0,  # JSON records -> Parquet in the Iceberg tables
    "cross_az_fraction": 2 / 3,  # client <-> broker traffic crossing zones (3 zones, no rack-aware fetch)
    "ledger_writes_per_delivery": 2,  # claim and completion of a delivery in the DynamoDB ledger
    "s3_puts_per_kpu_s": 0.6,  # files per subtask per second: 3 sinks rolling on 5 s checkpoints
    "cloudtrail_events_per_put": 1.0,  # S3 data events: one per object call on the PHI buckets
    "log_gb_month": 200.0,  # application, flow and service logs together
    # The operational store (Aurora Serverless v2, I/O-Optimized, a writer and a reader scaling with it): the
    # share of records it receives is the demo's (1,167 rows of 5,007 records routed,
    # bench/results/demo-2026-12-04-operational.txt); its write rate per ACU is not measured anywhere (no Aurora
    # here): 500 rows per ACU-second (about 2,000 per vCPU, batches of 500 through the keep-newest trigger).
    "to_operational": 0.25,
    "operational_rows_per_acu_s": 500.0,
    "operational_row_kb": 1.0,  # tokens and masks only: the lake's columns of one record
}
OPERATIONAL_MIN_ACU = 2  # infra/aws/operational.py's floor, per instance
KMS_KEYS = 14  # 4 PHI domains + 10 service keys (infra/aws/config.py)
REST_BATCH = 100


@dataclass(frozen=True)
class Measured:
    """Throughput figures read from bench/results, each with its file."""

    ingest_per_cpu_s: dict[int, float]  # size KB -> records per CPU-second of the whole ingest job, steady state
    api_per_cpu_s: float  # records per CPU-second of the ingest API, batches of 100
    loader_per_cpu_s: float  # rows per CPU-second of the Snowflake loader from Kafka
    deliveries_per_cpu_s: float  # partner deliveries per CPU-second of the delivery job
    sources: tuple[str, ...]
    # size KB -> bytes the archive stores per record: the protected form and the sealed record, zstandard (0053)
    archive_bytes: dict[int, float]


def measured(results: Path = RESULTS) -> Measured:
    """The figures, from the results files the README's benchmark section cites."""
    # One run of 100,000 records per size with every sink of the job, the operational store's and the fraud
    # detectors included, on RocksDB with incremental checkpoints as Managed Flink runs it (README, Benchmarks;
    # decision 0047), after decisions 0053 and 0054; its steady window (records 20-90 %), what a job that runs for
    # days pays per record: the whole run's figure also spreads the mini-cluster's start and the JIT's warm-up
    # over it (decision 0052).
    files = {4: "ingest-2026-12-06-facts-jvm-rocksdb.json", 12: "ingest-2026-12-06-facts-jvm-rocksdb.json"}
    ingest = {}
    for size, name in files.items():
        (job,) = [r for r in json.loads((results / name).read_text())["runs"]
                  if r["mode"] != "bare loop" and r["size_kb"] == size]
        ingest[size] = float(job["steady"]["records_per_cpu_s"])
    api = next(r for r in json.loads((results / "ingest-api-2026-11-22.json").read_text())["results"]
               if r["mode"] == "batch of 100")
    loader = json.loads((results / "snowflake-load-2026-12-04.json").read_text())["loader_from_kafka"]
    delivery = max(r["deliveries_per_cpu_s"] for r in json.loads(
        (results / "partner-delivery-2026-11-22-50-200.json").read_text())["results"])
    codecs = json.loads((results / ARCHIVE_CODECS).read_text())["sizes"]
    archive = {size: float(codecs[str(size)]["codecs"]["zstandard"]["bytes_per_record"]) for size in files}
    return Measured(ingest, float(api["records_per_api_cpu_s"]), float(loader["rows_per_cpu_s"]), float(delivery),
                    (*files.values(), "ingest-api-2026-11-22.json", "snowflake-load-2026-12-04.json",
                     "partner-delivery-2026-11-22-50-200.json", ARCHIVE_CODECS), archive)


def monthly(rate: int, size_kb: int, m: Measured, peak: int = max(RATES)) -> dict[str, float]:
    """USD per month by line, the pipeline held at `rate` records/s all month (MSK sized for `peak`)."""
    p, s = PRICES, SHARES
    hours = SECONDS_PER_MONTH / 3600
    mb_s = rate * size_kb / 1000  # record MB/s
    gb_month = mb_s * SECONDS_PER_MONTH / 1000
    kafka_factor = s["via_kafka_or_rest"] + 1 + s["to_partners"]  # raw in, curated for Snowflake and partners
    ingest_kpu = math.ceil(rate / m.ingest_per_cpu_s[size_kb])
    delivery_kpu = math.ceil(rate * s["to_partners"] / m.deliveries_per_cpu_s)
    kpu = ingest_kpu + delivery_kpu + 2  # + one orchestration KPU per application
    peak_in = peak * size_kb / 1000 * kafka_factor
    brokers = max(3, 3 * math.ceil(peak_in / s["broker_ingress_mb_s"] / 3))
    kafka_gb = mb_s * kafka_factor * 3600 * s["kafka_retention_h"] * 3 / 1000  # RF 3
    kafka_traffic_gb = gb_month * kafka_factor * 2  # produced once, consumed once
    api_requests = rate * s["via_rest"] / REST_BATCH * SECONDS_PER_MONTH
    fargate_vcpu = (max(2.0, 2 * math.ceil(rate * s["via_rest"] / m.api_per_cpu_s / 2))
                    + math.ceil(rate / m.loader_per_cpu_s) + 1.0)  # API (2 at least), loader, both pullers
    puts = s["s3_puts_per_kpu_s"] * ingest_kpu * SECONDS_PER_MONTH
    return {
        "Managed Flink (KPU-hours, running storage)": kpu * (hours * p["msf_kpu_hour"]
                                                             + 50 * p["msf_storage_gb_month"]),  # 50 GB per KPU
        "MSK (brokers, storage)": brokers * hours * p["msk_broker_hour_m7g_xlarge"]
                                  + kafka_gb * p["msk_storage_gb_month"],
        "cross-zone traffic to and from brokers": kafka_traffic_gb * s["cross_az_fraction"] * p["cross_az_gb"],
        "S3 archive (first month, hot)": archive_gb_month(rate, size_kb, m) * p["s3_standard_gb_month"],
        "S3 lake (Iceberg, compressed)": gb_month / s["lake_compression"] * p["s3_standard_gb_month"],
        "S3 requests": puts / 1000 * p["s3_put_per_1000"],
        "CloudTrail S3 data events": puts * s["cloudtrail_events_per_put"] / 1e5 * p["cloudtrail_data_events_per_100k"],
        "DynamoDB (delivery ledger, receipts)": (rate * s["to_partners"] * s["ledger_writes_per_delivery"]
                                                 + rate * s["via_rest"] / REST_BATCH) * SECONDS_PER_MONTH / 1e6
                                                * p["dynamodb_write_per_million"],
        "Transfer Family (endpoint, uploads)": hours * p["transfer_endpoint_hour"]
                                               + gb_month * (1 - s["via_kafka_or_rest"]) * p["transfer_upload_gb"],
        "API Gateway + WAF": api_requests / 1e6 * (p["apigw_rest_per_million"] + p["waf_per_million"])
                             + p["waf_monthly"],
        "NLB": hours * (p["nlb_hour"] + p["nlb_lcu_hour"] * mb_s * s["via_rest"] * 3.6),  # 1 LCU per GB/h
        "Fargate (API, loader, pullers)": fargate_vcpu * hours * (p["fargate_vcpu_hour"] + 2 * p["fargate_gb_hour"]),
        "VPC interface endpoints (9 x 3 zones)": 27 * hours * p["endpoint_az_hour"],
        "NAT gateways (3; partner traffic)": 3 * hours * p["nat_hour"]
                                            + gb_month * (s["to_partners"] + s["pulled"]) * p["nat_gb"],
        "Aurora operational store (2 instances, storage)": 2 * max(
            OPERATIONAL_MIN_ACU, math.ceil(rate * s["to_operational"] / s["operational_rows_per_acu_s"]))
            * hours * p["aurora_iopt_acu_hour"] + rate * s["to_operational"] * SECONDS_PER_MONTH
            * s["operational_row_kb"] / 1e6 * p["aurora_iopt_storage_gb_month"],
        "CloudWatch logs, KMS keys": s["log_gb_month"] * p["logs_ingest_gb"] + KMS_KEYS * p["kms_key_month"],
    }


def archive_gb_month(rate: int, size_kb: int, m: Measured) -> float:
    """GB the archive adds per month: its measured bytes per record (two copies of each, compressed)."""
    return rate * m.archive_bytes[size_kb] * SECONDS_PER_MONTH / 1e9


def archive_steady_state(rate: int, size_kb: int, m: Measured) -> float:
    """USD per month of the archive once it holds seven years, 30 days hot and the rest in Glacier IR."""
    gb_month = archive_gb_month(rate, size_kb, m)
    return gb_month * PRICES["s3_standard_gb_month"] + gb_month * (7 * 12 - 1) * PRICES["s3_glacier_ir_gb_month"]


def report(m: Measured | None = None) -> str:
    """The markdown tables of docs/cost.md."""
    m = measured() if m is None else m
    cases = [(rate, size) for size in SIZES_KB for rate in RATES]
    lines = ["| line (USD per month) | " + " | ".join(f"{r // 1000}k/s, {s} KB" for r, s in cases) + " |",
             "|---|" + "---:|" * len(cases)]
    tables = [monthly(rate, size, m) for rate, size in cases]
    for line in tables[0]:
        lines.append(f"| {line} | " + " | ".join(f"{t[line]:,.0f}" for t in tables) + " |")
    totals = [sum(t.values()) for t in tables]
    lines.append("| **total** | " + " | ".join(f"**{t:,.0f}**" for t in totals) + " |")
    lines.append(f"| against ${BUDGET:,} | " + " | ".join(f"{t / BUDGET:.0%}" for t in totals) + " |")
    lines += ["", "| measured input | value | results file |", "|---|---:|---|"]
    lines += [f"| ingest job, records per CPU-second at {size} KB (steady window) | {v:,.0f} "
              f"| `bench/results/{m.sources[i]}` |" for i, (size, v) in enumerate(sorted(m.ingest_per_cpu_s.items()))]
    rows = (("ingest API, records per CPU-second (batches of 100)", f"{m.api_per_cpu_s:,.0f}", m.sources[2]),
            ("Snowflake loader, rows per CPU-second", f"{m.loader_per_cpu_s:,.0f}", m.sources[3]),
            ("partner delivery, deliveries per CPU-second", f"{m.deliveries_per_cpu_s:,.1f}", m.sources[4]),
            *((f"archive, bytes stored per {size} KB record (zstandard)", f"{v:,.0f}", m.sources[5])
              for size, v in sorted(m.archive_bytes.items())))
    lines += [f"| {what} | {value} | `bench/results/{source}` |" for what, value, source in rows]
    lines += ["", "| archive at seven years (USD per month) | " + " | ".join(
        f"{r // 1000}k/s, {s} KB" for r, s in cases if r == min(RATES)) + " |", "|---|---:|---:|",
        "| 30 days Standard + 83 months Glacier IR | " + " | ".join(
            f"{archive_steady_state(r, s, m):,.0f}" for r, s in cases if r == min(RATES)) + " |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the tables."""
    parser = argparse.ArgumentParser(prog="python -m infra.aws.cost_model", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    sys.stdout.write(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
