"""Avro decode per record: the two shipped Avro feeds, this checkout's decoder against another's, interleaved.

Run: `.venv/bin/python -m bench.avro_decode_bench [--records 2000] [--size-kb 4] [--rounds 7]
[--against ../other-checkout]`.
For the shipped Avro feeds (hospital_g_claims_avro: claims in object container files of 100; insurer_h_payments_avro:
payments as single-object messages) it generates --records valid canonical records of --size-kb KiB, encodes them as
the feed sends them, and times udfs.decoders.avro.decode over every unit, records pulled and made canonical: the CPU
time of a whole pass per record. With --against, that checkout's udfs/decoders/avro.py is loaded beside this one
(under another module name; everything else it imports is this checkout's) and the two run in alternate passes,
`--rounds` of each, so drift of a shared machine falls on both; the least CPU time per decoder is kept. Both must
decode every record to the same canonical output, or the bench says so and exits 1.
Results print as a table and go to bench/results/avro-decode-<date>.json. Recorded, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

FEEDS = (("hospital_g_claims_avro", "container, 100 per file"), ("insurer_h_payments_avro", "single object"))


def load_other(checkout: Path) -> ModuleType:
    """Another checkout's Avro decoder as a module of its own (its imports resolve to this checkout)."""
    path = checkout / "udfs" / "decoders" / "avro.py"
    spec = importlib.util.spec_from_file_location("other_avro_decoder", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"no Avro decoder at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def decode_all(decoder: ModuleType, units: list[bytes], options: dict[str, Any]) -> list[Any]:
    """Every unit's items, as (position, record or reason code)."""
    out: list[Any] = []
    for payload in units:
        for item in decoder.decode(payload, options):
            out.append((item.position, item.record if item.error is None else item.error.reason_code))
    return out


def cpu_pass(decoder: ModuleType, units: list[bytes], options: dict[str, Any]) -> float:
    """CPU seconds of one decode pass over every unit (the items are dropped as they come)."""
    began = time.process_time()
    for payload in units:
        for _ in decoder.decode(payload, options):
            pass
    return time.process_time() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.avro_decode_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000, help="records per feed (default 2000)")
    parser.add_argument("--size-kb", type=int, default=4, help="canonical record size in KiB (default 4)")
    parser.add_argument("--rounds", type=int, default=7, help="passes per decoder, the least kept (default 7)")
    parser.add_argument("--against", type=Path, help="another checkout whose decoder runs in alternate passes")
    args = parser.parse_args(argv)
    if args.records <= 0 or args.size_kb <= 0 or args.rounds <= 0:
        parser.error("--records, --size-kb and --rounds must be positive")
    began, load_before = time.perf_counter(), os.getloadavg()

    from bench.ingest_bench import write_results
    from bench.resources import code_version, machine_info
    from bench.stage_costs import feed_data, load_feed_contract
    from udfs.decoders import avro

    decoders = {"this checkout": avro}
    if args.against:
        decoders[f"against {args.against}"] = load_other(args.against.resolve())
    rows: list[dict[str, Any]] = []
    same = True
    for feed, label in FEEDS:
        contract = load_feed_contract(feed)
        data = feed_data(contract, args.records, args.size_kb, 100)
        units, options = [u.payload for u in data.units], contract.decoder_options
        outputs = {name: decode_all(d, units, options) for name, d in decoders.items()}  # also the warm-up
        agree = all(o == next(iter(outputs.values())) for o in outputs.values())
        same = same and agree
        gc.collect()
        gc.freeze()
        least = dict.fromkeys(decoders, float("inf"))
        for _ in range(args.rounds):
            for name, decoder in decoders.items():
                least[name] = min(least[name], cpu_pass(decoder, units, options))
        gc.unfreeze()
        for name in decoders:
            us = least[name] / args.records * 1e6
            rows.append({"feed": feed, "input": label, "decoder": name, "records": args.records,
                         "wire_bytes_per_record": round(sum(map(len, units)) / args.records),
                         "cpu_us_per_record": round(us, 1), "records_per_s_per_core": round(1e6 / us),
                         "outputs_agree": agree})

    print(f"\n{'feed':<26}{'input':<26}{'decoder':<40}{'CPU µs/rec':>12}{'rec/s per core':>16}  same output")
    for r in rows:
        print(f"{r['feed']:<26}{r['input']:<26}{r['decoder'][:39]:<40}{r['cpu_us_per_record']:>12,.1f}"
              f"{r['records_per_s_per_core']:>16,}  {'yes' if r['outputs_agree'] else 'NO'}")
    doc = {"machine": machine_info(), "code": code_version(), "records_per_feed": args.records,
           "size_kb": args.size_kb, "rounds": args.rounds, "against": str(args.against) if args.against else None,
           "duration_s": round(time.perf_counter() - began, 1),
           "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()}, "rows": rows,
           "notes": ["cpu_us_per_record: the least process CPU time of --rounds whole passes (decode and make "
                     "canonical every record of every unit) / records; decoders alternate pass by pass.",
                     "outputs_agree: every decoder gave the same (position, canonical record or reason code) list."]}
    path = write_results(doc, kind="avro-decode")
    print(f"\nresults: {path.relative_to(path.parents[2])}; took {doc['duration_s']:.0f} s; "
          f"load average before {load_before[0]:.1f}, after {doc['load_average_1_5_15']['after'][0]:.1f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
