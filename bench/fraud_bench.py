"""Fraud signals: latency from a claim's ingest to its signal being queryable, precision and recall per rule, and
the detectors' state per member, at a steady offered rate of claims.

    python -m bench.fraud_bench [--rate 300] [--seconds 60] [--fraud-rate 0.03] [--checkpoint-ms 5000]

Eligibility of one landing feed is published first (as files) and committed; then claims of one Kafka feed are
paced at `--rate` with planted patterns (synthetic.FraudPlanter) beside the natural ones (members whose coverage
ended or starts later). The ingest job runs as in production (own process, every sink on). Afterwards, from the
Iceberg table fraud_signals: each signal's delay from the ingest of the record that completed it to the detector
(detected_at - ingested_at) and to the commit of the snapshot that made it queryable; each rule's precision and
recall against the ground truth (infra.local.ground_truth.FraudTruth). The state per member is measured by running
the same detectors over the same records (member ids as 44-character stand-ins for tokens): the pickled bytes a
member's state takes, as Flink keeps it. Writes bench/results/fraud-<date>.json. Needs `./medistream stack up`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from bench.latency_bench import (
    committed_rows,
    isolated_run,
    paced_produce,
    percentiles,
    wait_first_checkpoint,
    with_checkpoint_interval,
)

RESULTS = Path(__file__).resolve().parent / "results"
CLAIMS_FEED, ELIGIBILITY_FEED = "hospital_a_claims", "clearinghouse_c_eligibility"


def signal_commits(table: Any) -> dict[str, tuple[int, int, int]]:
    """Signal id -> (ingested_at ms, detected_at ms, commit ms of the snapshot whose data file holds it)."""
    import pyarrow.parquet as pq

    commits = {s.snapshot_id: s.timestamp_ms for s in table.snapshots()}
    found: dict[str, tuple[int, int, int]] = {}
    for entry in table.inspect.entries().to_pylist():
        if entry["status"] != 1:  # 1 = ADDED in the snapshot named by the entry
            continue
        with table.io.new_input(entry["data_file"]["file_path"]).open() as stream:
            rows = pq.read_table(stream, columns=["signal_id", "ingested_at", "detected_at"]).to_pylist()
        for row in rows:
            found[row["signal_id"]] = (int(row["ingested_at"].timestamp() * 1000),
                                       int(row["detected_at"].timestamp() * 1000), commits[entry["snapshot_id"]])
    return found


def state_per_member(generated: list[Any], contracts: dict[str, Any]) -> dict[str, Any]:
    """Bytes of each member's detector state after every record, as the job's state keeps it (pickled builtins: its
    own part and every piece)."""
    from udfs.fraud import Fact, Line, MemberDetector, MemberState, load_rules, money, state_bytes

    detector, states = MemberDetector(load_rules()), dict[str, MemberState]()
    for g in generated:
        if g.expect != "valid":
            continue
        record = orjson.loads(g.payload)
        stand_in = hashlib.sha256(b"member:" + str(record.get("subscriber", record.get("member", {})).get(
            "member_id")).encode()).hexdigest()[:44]
        kind = contracts[g.feed].record_type
        if kind == "claim":
            lines = tuple(Line(line["procedure_code"], money(str(line["charge"])) or "", line["service_date"])
                          for line in record["service_lines"])
            fact = Fact(stand_in, "claim", g.record_id, g.feed, 0, record["billing_provider"]["npi"],
                        record["frequency_code"], record["service_date_from"], lines)
        else:
            coverage = record["coverage"]
            fact = Fact(stand_in, "eligibility", g.record_id, g.feed, 0, coverage_start=coverage["start_date"],
                        coverage_end=coverage.get("end_date"))
        state = states.setdefault(stand_in, MemberState())
        detector.on_fact(state, fact)
        detector.on_timer(state, stand_in)
    sizes = [state_bytes(state) for state in states.values()]
    return {"members": len(sizes), "mean_bytes": round(statistics.fmean(sizes), 1) if sizes else 0,
            "p95_bytes": round(statistics.quantiles(sizes, n=20)[18]) if len(sizes) > 1 else 0,
            "max_bytes": max(sizes, default=0)}


def main() -> None:
    """Run the fraud-signal benchmark once and record its result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300.0, help="claims per second offered")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fraud-rate", type=float, default=0.03)
    parser.add_argument("--checkpoint-ms", type=int, default=5000)
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    args = parser.parse_args()

    from bench.resources import machine_info
    from connectors.properties import local_aws_environment

    local_aws_environment()
    from infra.local import synthetic
    from infra.local.ground_truth import expected_outcome
    from infra.local.publish import publish
    from infra.local.reference import publish_reference
    from schemas.contracts import load_contracts
    from tools.job_processes import JobProcesses
    from tools.readback import (
        expected_signals,
        fraud_signals,
        iceberg_table,
        linkage_digest,
        matched_signals,
        s3_client,
        split_s3_url,
    )

    _run_id, workdir, cfg, properties = isolated_run("fraud")
    with_checkpoint_interval(properties, args.checkpoint_ms)
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    # An isolated run's feeds carry its run id as a prefix (infra.local.isolation).
    feeds = [f for f in synthetic.feeds_from_contracts(contracts.values())
             if f.name.endswith((CLAIMS_FEED, ELIGIBILITY_FEED))]
    claims_wanted = int(args.rate * args.seconds)
    generated = list(synthetic.generate(int(claims_wanted / 0.8), seed=13, feeds=feeds,
                                        mix=synthetic.Mix(0.8, 0.0, 0.2), duplicate_rate=0.0, invalid_rate=0.0,
                                        size_kb=(4, 4), fraud_rate=args.fraud_rate))
    eligibility = [g for g in generated if g.record_type == "eligibility"]
    claims = [g for g in generated if g.record_type == "claim"]
    s3 = s3_client(cfg.s3)
    bucket, prefix = split_s3_url(cfg.reference.path)
    publish_reference(s3, bucket, prefix, 13, version=1)
    from connectors.kafka import create_missing_topics

    create_missing_topics(cfg.kafka.bootstrap_servers, {f"raw.{g.feed}" for g in claims[:1]})
    os.environ["MEDISTREAM_PROPERTIES"] = str(properties)
    jobs = JobProcesses(properties, workdir / "logs")
    jobs.start("ingest")
    try:
        wait_first_checkpoint(jobs, cfg.checkpoints)
        deadline = time.monotonic() + 300
        landing_bucket, landing_prefix = split_s3_url(cfg.landing.path)
        publish(eligibility, cfg.kafka.bootstrap_servers, s3, landing_bucket, landing_prefix=landing_prefix,
                records_per_file=200, contracts=contracts)
        table = iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.table("eligibility"))
        while committed_rows(table) < len(eligibility):
            jobs.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("the eligibility files were not committed within 300 s")
            time.sleep(2)
        started = time.monotonic()
        sent = paced_produce(claims, cfg.kafka.bootstrap_servers, args.rate)
        offered_s = time.monotonic() - started
        truth = expected_outcome(generated, contracts, 13, linkage_digest(cfg))
        patterns, run_keys = expected_signals(truth["fraud"]), set(truth["archived"])
        deadline = time.monotonic() + args.drain_timeout
        while True:
            jobs.check_alive()
            held = matched_signals(truth["fraud"], fraud_signals(cfg)["iceberg"], run_keys)
            if sum(min(held[k], 1) for k in patterns) >= len(patterns) or time.monotonic() > deadline:
                break
            time.sleep(3)
        time.sleep(args.checkpoint_ms / 1000 * 2)  # a late unexpected signal would land by now
        signals = fraud_signals(cfg)["iceberg"]
        commits = signal_commits(iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.table("fraud_signals")))
    finally:
        jobs.stop_all()
        os.environ.pop("MEDISTREAM_PROPERTIES", None)

    held = matched_signals(truth["fraud"], signals, run_keys)
    rules = {}
    for rule, found in truth["fraud"].items():
        mine = {k: n for k, n in held.items() if k.startswith(f"{rule}/")}
        right = {k for k in mine if "/unexpected/" not in k}
        rules[rule] = {"patterns": len(found), "signals": sum(mine.values()),
                       "precision": round(sum(mine[k] for k in right) / sum(mine.values()), 3) if mine else None,
                       "recall": round(len(right) / len(found), 3) if found else None}
    to_detector = [float(detected - ingested) for ingested, detected, _commit in commits.values()]
    to_queryable = [float(commit - ingested) for ingested, _detected, commit in commits.values()]
    result = {
        "benchmark": "fraud", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
        "offered_claims_per_s": args.rate, "offered_for_s": round(offered_s, 1), "claims": len(sent),
        "eligibility_records": len(eligibility), "fraud_rate": args.fraud_rate,
        "checkpoint_interval_ms": args.checkpoint_ms, "producer_achieved_rate": round(len(sent) / offered_s, 1),
        "rules": rules,
        "claim_ingest_to_detected": percentiles(to_detector),
        "claim_ingest_to_queryable": percentiles(to_queryable),
        "state_per_member": state_per_member(generated, contracts),
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"fraud-{result['date']}.json"
    out.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
