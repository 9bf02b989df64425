"""PHI protection: its cost per record against the whole stage, and KMS calls per million records.

1. CPU: the same 4 KB records through IngestStage.process twice, with the shipped policy and with an
   all-"clear" policy (same code path, nothing tokened, masked or encrypted, no sealed copy), plus
   Protector.protect alone. Static in-memory keys: data keys are cached either way, so KMS is not
   on the per-record path.
2. KMS: Protector over the real KMS API of the local stack (moto server) with the job's data-key
   cache settings, counting GenerateDataKey / Decrypt / DescribeKey calls over N records, and what
   the age bound adds at a given per-subtask rate.

Run: `.venv/bin/python -m bench.protect_bench [--records 5000] [--kms-records 100000]` (stack up for 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import orjson


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(ordered[len(ordered) // 2], 1), "p95": round(ordered[int(len(ordered) * 0.95)], 1),
            "mean": round(statistics.fmean(ordered), 1)}


def _timed(fn: Any, inputs: list[Any]) -> tuple[list[float], float]:
    for x in inputs[:200]:
        fn(x)
    samples: list[float] = []
    cpu = time.process_time()
    for x in inputs:
        start = time.perf_counter_ns()
        fn(x)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples, (time.process_time() - cpu) * 1e6 / len(inputs)


def clear_policy(policy: Any) -> Any:
    """The same policy with every action "clear" and no derived tokens: the baseline."""
    rules = {t: {p: dataclasses.replace(r, action="clear", method=None, namespace=None) for p, r in by_path.items()}
             for t, by_path in policy.rules.items()}
    return dataclasses.replace(policy, rules=rules, derived={t: () for t in policy.derived})


def cpu_costs(records: int) -> dict[str, Any]:
    """Stage per record with and without protection, and protect() alone, on 4 KB JSON claims."""
    from bench.stage_costs import load_feed_contract
    from infra.local import synthetic
    from infra.local.reference import reference_data
    from infra.local.static_keys import StaticKeySource, static_token_keys
    from schemas.phi_policy import load_policy
    from udfs.ingest import Accepted, IngestStage
    from udfs.phi.envelope import DataKeyCache
    from udfs.phi.protect import Protector
    from udfs.phi.tokens import Tokenizer
    from udfs.source import SourceRef

    contract = load_feed_contract("hospital_a_claims")
    feed = synthetic.Feed(contract.feed, "claim", "kafka")
    generated = [g for g in synthetic.generate(records, seed=7, feeds=(feed,), mix=synthetic.Mix(1.0, 0.0, 0.0),
                                               size_kb=(4, 4), duplicate_rate=0.0, invalid_rate=0.0)]
    policy, tokenizer = load_policy("default-v1"), Tokenizer(static_token_keys())
    stages = {name: IngestStage({contract.feed: contract}, {"default-v1": Protector(p, tokenizer,
                                                                                    DataKeyCache(StaticKeySource()))},
                                reference_data(7))
              for name, p in (("protected", policy), ("clear", clear_policy(policy)))}
    now, source = datetime.now(UTC), SourceRef.from_kafka(f"raw.{contract.feed}", 0, 0)
    out: dict[str, Any] = {"records": len(generated), "record_kb": 4}
    for stage in stages.values():
        accepted = [o for g in generated[:50] for o in stage.process(g.payload, source, 0, now)]
        assert all(isinstance(o, Accepted) for o in accepted), "the sample must be valid"
    # Interleaved, record by record: both variants see the same load on a shared machine.
    samples: dict[str, list[float]] = {name: [] for name in stages}
    for g in generated:
        for name, stage in stages.items():
            start = time.perf_counter_ns()
            list(stage.process(g.payload, source, 0, now))
            samples[name].append((time.perf_counter_ns() - start) / 1000)
    for name in stages:
        out[f"stage_{name}_us"] = _percentiles(samples[name])
    protector = stages["protected"].feeds[contract.feed].protector
    canonical = [orjson.loads(g.payload) for g in generated]
    alone, cpu_us = _timed(lambda r: protector.protect(r, "claim", orjson.dumps(r)), canonical)
    out["protect_alone_us"] = _percentiles(alone) | {"cpu_us_per_record": round(cpu_us, 1)}
    base = out["stage_clear_us"]["p50"]
    out["protection_share_of_stage_p50"] = round((out["stage_protected_us"]["p50"] - base) / base, 3)
    return out


def kms_calls(records: int, rate_per_s: float) -> dict[str, Any]:
    """KMS calls over `records` protected records with the job's cache bounds, on the local KMS API."""
    from connectors.kms import KmsDataKeys, aws_client
    from connectors.properties import LOCAL_PROPERTIES, load_phi_config, local_aws_environment, read_property_groups
    from infra.local import synthetic
    from infra.local.static_keys import static_token_keys
    from schemas.phi_policy import load_policy
    from udfs.phi.envelope import DataKeyCache
    from udfs.phi.protect import Protector
    from udfs.phi.tokens import Tokenizer

    local_aws_environment()
    phi = load_phi_config(read_property_groups(LOCAL_PROPERTIES))
    source = KmsDataKeys(aws_client(phi, "kms"), phi.alias_prefix)
    cache = DataKeyCache(source, phi.data_key_max_uses, phi.data_key_max_age_s)
    protector = Protector(load_policy("default-v1"), Tokenizer(static_token_keys()), cache)
    sample = [(g.record_type, orjson.loads(g.payload))
              for g in synthetic.generate(2000, seed=9, duplicate_rate=0.0, invalid_rate=0.0)]
    start = time.perf_counter()
    for i in range(records):
        record_type, record = sample[i % len(sample)]
        protector.protect(record, record_type, orjson.dumps(record))
    elapsed = time.perf_counter() - start
    calls = sum(source.calls.values())
    domains = len(set(load_policy("default-v1").domains.values()))
    # In a job the age bound usually decides: one new key per domain every max_age seconds per subtask.
    by_age = domains * 1e6 / (rate_per_s * phi.data_key_max_age_s)
    return {"records": records, "elapsed_s": round(elapsed, 1), "calls": dict(source.calls),
            "calls_per_million_records_measured": round(calls * 1e6 / records, 1),
            "data_key_max_uses": phi.data_key_max_uses, "data_key_max_age_s": phi.data_key_max_age_s,
            "subtask_rate_per_s": rate_per_s, "calls_per_million_records_from_age_bound": round(by_age, 1)}


def main(argv: list[str] | None = None) -> int:
    """Print both measurements and write bench/results/protect-<date>.json."""
    parser = argparse.ArgumentParser(prog="python -m bench.protect_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--kms-records", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="records/s of one subtask, for the age bound")
    args = parser.parse_args(argv)
    from bench.ingest_bench import write_results
    from bench.resources import code_version, machine_info

    cpu = cpu_costs(args.records)
    print(json.dumps(cpu, indent=2))
    kms = kms_calls(args.kms_records, args.rate) if args.kms_records > 0 else {}
    print(json.dumps(kms, indent=2))
    path = write_results({"machine": machine_info(), "code": code_version(), "cpu": cpu, "kms": kms}, "protect")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
