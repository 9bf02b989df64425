"""The JVM's CPU per row for a Flink SQL expression over the ingest operator's large columns.

Run: `.venv/bin/python -m bench.sql_cost [--sizes 4,12] [--records 500] [--copies 200] [--rounds 3]`.

Before moving work from the Python operator into the job's SQL (or back), price it here: a JVM-side expression is
paid once per row in the sinks' task, and its cost is not obvious from its text. Flink's string functions such as
`REPLACE` go through `java.lang.String` (decode the UTF-8, work, encode again), so an expression over a 4-12 KB
column costs tens of microseconds.

It generates --records claims of each size in --sizes from the ingest bench's feed (`hospital_a_claims`), takes the
rows the ingest operator sends for them (udfs.rows.accepted_values) where the partner route takes them, and puts their
large columns in a table with the job's types: all four BYTES (UTF-8; decisions 0046 and 0058).
Each expression then runs in a bounded Flink job at parallelism 1 over --copies copies of every row (a cross join)
into a blackhole sink, and the CPU of the Flink JVM (user + system) per row is recorded. Every round runs every
expression once, in turn; the first round warms the JIT up and is reported apart. The baseline `column` reads a column
as it is, so an expression's own cost is its figure minus the baseline's, in the same round. The expressions are
alternatives of one value: before timing, each must give the column's value on every row, or the bench stops.

The expressions measured (EXPRESSIONS): reading `partner_curated` as the job does, and decision 0050's alternative,
the partner's value built in SQL from `curated` and `sealed` (measured, not kept).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from bench.ingest_bench import TEMPLATE_FEED as FEED
from bench.ingest_bench import parse_sizes

# The partner topic's value two ways (decision 0050): the column the ingest operator built, and the curated value
# with the sealed copy appended by SQL (its closing brace dropped, the sealed text escaped as a JSON string).
EXPRESSIONS = {
    "column": "`partner_curated`",
    "partner value appended in SQL": (
        "CAST(CONCAT(SUBSTR(CAST(curated AS STRING), 1, CHAR_LENGTH(CAST(curated AS STRING)) - 1), "
        r"""',"sealed":', COALESCE(CONCAT('"', REPLACE(REPLACE(CAST(sealed AS STRING), '\', '\\'), '"', '\"'), """
        r"""'"'), 'null'), '}')"""
        " AS BYTES)"
    ),
}


def large_columns(size_kb: int, records: int) -> list[tuple[bytes, bytes, bytes, bytes]]:
    """(curated, partner_curated, payload, sealed) of the ingest operator's row for generated claims."""
    from bench.stage_costs import feed_data, load_feed_contract, reference_data
    from infra.local.static_keys import static_protectors
    from udfs.ingest import Accepted, IngestStage
    from udfs.rows import ACCEPTED_FIELDS, accepted_values

    contract = load_feed_contract(FEED)
    stage = IngestStage({FEED: contract}, static_protectors(), reference_data())
    out = []
    for unit in feed_data(contract, records, size_kb, 100).units:
        for outcome in stage.process(unit.payload, unit.source, 0):
            if isinstance(outcome, Accepted):
                row = dict(zip(ACCEPTED_FIELDS, accepted_values(outcome, unit.source.pointer(), 0), strict=True))
                if row["partner_curated"] is not None:  # the partner route has a condition: the rows it takes
                    out.append((row["curated"], row["partner_curated"], row["payload"], row["sealed"]))
    if not out:
        raise SystemExit(f"{FEED}: no generated claim was routed to a partner")
    return out


def measure(size_kb: int, records: int, copies: int, rounds: int) -> dict[str, Any]:
    """JVM CPU µs per row of each expression, per round."""
    import psutil
    from pyflink.common import Row
    from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment

    columns = large_columns(size_kb, records)
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("parallelism.default", "1")
    t_env.create_temporary_view("base", t_env.from_elements(
        [Row(*(bytearray(column) for column in row)) for row in columns],
        DataTypes.ROW([DataTypes.FIELD("curated", DataTypes.BYTES()),
                       DataTypes.FIELD("partner_curated", DataTypes.BYTES()),
                       DataTypes.FIELD("payload", DataTypes.BYTES()), DataTypes.FIELD("sealed", DataTypes.BYTES())])))
    numbers = ", ".join(f"({i})" for i in range(copies))
    t_env.execute_sql(f"CREATE TEMPORARY VIEW copies AS SELECT * FROM (VALUES {numbers}) AS x(i)")  # noqa: S608 - ints
    t_env.execute_sql("CREATE TEMPORARY TABLE sunk (v BYTES) WITH ('connector' = 'blackhole')")
    differing = {name: _rows_differing(t_env, expression) for name, expression in EXPRESSIONS.items()}
    if any(differing.values()):  # alternatives of one value: pricing one that differs would price the wrong thing
        raise SystemExit(f"{size_kb} KB: rows where an expression differs from the column: {differing}")
    jvm = next(p for p in psutil.Process(os.getpid()).children(recursive=True) if "java" in p.name())
    rows = len(columns) * copies
    results: dict[str, list[float]] = {name: [] for name in EXPRESSIONS}
    for round_ in range(rounds):
        for name, expression in EXPRESSIONS.items():
            before, began = jvm.cpu_times(), time.perf_counter()
            query = f"INSERT INTO sunk SELECT {expression} FROM base CROSS JOIN copies"  # noqa: S608 - our own SQL
            t_env.execute_sql(query).wait()
            after = jvm.cpu_times()
            us = (after.user + after.system - before.user - before.system) / rows * 1e6
            results[name].append(round(us, 1))
            print(f"{size_kb} KB, round {round_ + 1}: {name}: {us:.1f} JVM CPU µs per row "
                  f"({rows:,} rows, {time.perf_counter() - began:.1f} s)", flush=True)
    sizes = {name: round(sum(len(c[i]) for c in columns) / len(columns)) for i, name in
             enumerate(("curated", "partner_curated", "payload", "sealed"))}
    warm = {name: min(values[1:]) if len(values) > 1 else values[0] for name, values in results.items()}
    return {"size_kb": size_kb, "distinct_rows": len(columns), "rows_differing": differing, "rows_per_run": rows,
            "bytes_per_row": sizes,
            "jvm_cpu_us_per_row_by_round": results, "jvm_cpu_us_per_row_least_after_warm_up": warm,
            "over_the_column_us": {name: round(us - warm["column"], 1) for name, us in warm.items()}}


def _rows_differing(t_env: Any, expression: str) -> int:
    """Rows of `base` where the expression's value is not the `partner_curated` column's."""
    query = f"SELECT COUNT(*) FROM base WHERE NOT ({expression}) = `partner_curated`"  # noqa: S608 - our own SQL
    with t_env.execute_sql(query).collect() as results:
        return int(next(iter(results))[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sql_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=[4, 12], help="claim sizes in KiB (default 4,12)")
    parser.add_argument("--records", type=int, default=500, help="distinct generated claims (default 500)")
    parser.add_argument("--copies", type=int, default=200, help="copies of each row per run (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the first warms the JIT up (default 3)")
    args = parser.parse_args(argv)
    if min(args.records, args.copies, args.rounds) <= 0:
        parser.error("--records, --copies and --rounds must be positive")
    from bench.ingest_bench import write_results
    from bench.resources import code_version, machine_info

    load_before = os.getloadavg()
    runs = [measure(size, args.records, args.copies, args.rounds) for size in args.sizes]
    for run in runs:
        print(f"{run['size_kb']} KB: least after warm-up, over the column: {run['over_the_column_us']}")
    path = write_results({"machine": machine_info(), "code": code_version(), "expressions": EXPRESSIONS,
                          "load_average_1_5_15": {"before": list(load_before), "after": list(os.getloadavg())},
                          "runs": runs}, kind="sql-cost")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
