"""The fraud detectors' state work per claim for one member whose every claim waits for coverage spans.

    python -m bench.fraud_state_bench [--claims 400] [--lines 6] [--repeat 3]

One member, no eligibility on file: each claim stays pending (up to the rules' `max_pending`, 256). For each claim,
what the job's operator does around the rules, as Flink keeps the state between records: the member's own part
unpickled, the pieces the claim needs read and unpickled, `MemberDetector.on_fact`, the own part and the changed
pieces pickled, the removed pieces deleted (`udfs.fraud`, whichever checkout is first on the path: run it against an
earlier tree with `PYTHONPATH=<tree> python <this file>` to compare). Printed and written to
bench/results/fraud-state-<date>.json per range of claims so far: mean CPU µs per claim (the least of `--repeat`
passes), the own part's pickled bytes, and the bytes read and written per claim. Pure Python, no JVM: the JVM
detectors (decision 0055) keep the same builtins, pickled the same way, so the bytes are theirs too. Recorded, never
asserted.
"""

from __future__ import annotations

import argparse
import json
import pickle  # nosec B403 # -- our own synthetic states, as the detectors' state holds them
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
RANGES = ((0, 10), (10, 67), (67, 200), (200, 256), (256, 400))


def one_pass(claims: int, lines: int) -> list[dict[str, float]]:
    """Per claim: CPU µs, own part bytes, bytes read and written."""
    from udfs.fraud import Fact, FraudRules, Line, MemberDetector, Rule, state_from_plain, state_to_plain

    rules = FraudRules((Rule("many", "providers_per_member_day", 1, 3), Rule("amounts", "service_amount_mismatch",
                                                                             threshold=2),
                        Rule("outside", "service_outside_eligibility", grace_ms=2000)), 86_400_000, max_pending=256)
    detector = MemberDetector(rules)
    own: bytes | None = None
    pieces: dict[str, bytes] = {}
    rows: list[dict[str, float]] = []
    for n in range(claims):
        day = (date(2024, 1, 1) + timedelta(days=n % 300)).isoformat()
        fact = Fact("m" * 44, "claim", f"{n:044d}", "feed_a", 1_000 + n, billing_npi=str(1_000_000_000 + n % 50),
                    frequency_code="1", service_date=day,
                    lines=tuple(Line(f"99{k:03d}", "100", day) for k in range(lines)))
        read = [0]

        def load(key: str, read: list[int] = read) -> Any:
            found = pieces.get(key)
            read[0] += len(found) if found else 0
            return None if found is None else pickle.loads(found)  # noqa: S301 # nosec B301 -- written just above

        start = time.process_time_ns()
        state = state_from_plain(None if own is None else pickle.loads(own), load)  # noqa: S301 # nosec B301
        detector.on_fact(state, fact)
        own = pickle.dumps(state_to_plain(state))
        written = {key: pickle.dumps(piece) for key, piece in state.changed_pieces().items()}
        pieces.update(written)
        # Pieces a fact removes exist only in state version 4 (66c9493, reverted): decision 0060's figures for it
        # came from this bench run against that tree, so it stays able to.
        for key in getattr(state, "removed", ()):
            pieces.pop(key, None)
        cpu_us = (time.process_time_ns() - start) / 1000
        rows.append({"cpu_us": cpu_us, "own_bytes": len(own),
                     "bytes_read_and_written": 2 * len(own) + read[0] + sum(map(len, written.values()))})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the passes, print the table, write the JSON."""
    import udfs.fraud
    from bench.resources import code_version, machine_info

    parser = argparse.ArgumentParser(prog="python -m bench.fraud_state_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=400)
    parser.add_argument("--lines", type=int, default=6, help="lines per claim (6 for 4 KB, 25 for 12 KB)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    passes = [one_pass(args.claims, args.lines) for _ in range(args.repeat)]
    table = []
    for low, high in RANGES:
        if high > args.claims:
            break
        means = [sum(r["cpu_us"] for r in rows[low:high]) / (high - low) for rows in passes]
        last = passes[0][high - 1]
        table.append({"claims_so_far": f"{low}-{high - 1}", "cpu_us_per_claim": round(min(means), 1),
                      "own_part_bytes_at_end": last["own_bytes"],
                      "bytes_read_and_written_per_claim": round(
                          sum(r["bytes_read_and_written"] for r in passes[0][low:high]) / (high - low))})
    version = udfs.fraud.STATE_VERSION
    print(f"udfs.fraud from {udfs.fraud.__file__} (state version {version}), {args.lines} lines per claim")
    print(f"{'claims so far':>14}  {'CPU µs/claim':>12}  {'own part bytes':>14}  {'bytes read+written/claim':>24}")
    for row in table:
        print(f"{row['claims_so_far']:>14}  {row['cpu_us_per_claim']:>12,.1f}  {row['own_part_bytes_at_end']:>14,}  "
              f"{row['bytes_read_and_written_per_claim']:>24,}")
    doc = {"machine": machine_info(), "code": code_version(), "fraud_module": udfs.fraud.__file__,
           "state_version": version, "claims": args.claims, "lines": args.lines, "repeat": args.repeat, "rows": table}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"fraud-state-{time.strftime('%Y-%m-%d')}-v{version}-{args.lines}lines.json"
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
