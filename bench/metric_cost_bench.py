"""What the ingest operator's metrics cost per record, measured inside a thread-mode task (decision 0027).

Run: `.venv/bin/python -m bench.metric_cost_bench [--records 200000] [--repeat 5]`. One small PyFlink job
(thread mode, the mini-cluster with the loopback Prometheus reporter, as the ingest job runs) whose single
map call times, on the task's own thread and its real Flink metric group:
1. `old`: what the operator did per accepted record before: a key string, a dict lookup and
   `Counter.inc()`, which in thread mode calls into the JVM (pemja) every time;
2. `new`: what it does now (jobs/ingest_operator.py): per record two list-item increments and the
   corrections check; per unit the flush-due comparison; once a second the flush of the differences
   into Flink's counters (FlinkCounters), driven by the wall clock as in the job;
3. `none`: the same loop with no counting, the floor (it reads the clock per unit, as the job does).
Per-record CPU ns (thread time) of the least of `repeat` rounds; results go to
bench/results/metric-cost-<date>.json. Recorded, never asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def measure(group: object, records: int, repeat: int) -> dict[str, float]:
    """Per-record CPU ns of each way of counting, least over `repeat` rounds (runs inside the task)."""
    from connectors.metrics.flink_counters import N_ACCEPTED, N_CORRECTIONS, N_IN, N_UNITS, FlinkCounters

    feed = "hospital_a_claims"

    def none() -> None:
        for i in range(records):
            _ = i is None
            _ = int(time.time() * 1000)

    def old() -> None:
        counters: dict[str, object] = {}
        for i in range(records):
            _ = i is None
            _ = int(time.time() * 1000)
            key = f"feed/{feed}/accepted"
            if key not in counters:
                counters[key] = group.add_group("feed_old", feed).counter("accepted")  # type: ignore[attr-defined]
            counters[key].inc()  # type: ignore[attr-defined]

    def new() -> None:
        metrics = FlinkCounters(group.add_group("bench", "new"))  # type: ignore[attr-defined]
        for i in range(records):
            counts = metrics.row("feed", feed)  # per unit in the job (a unit holds one record here)
            counts[N_UNITS] += 1
            counts[N_IN] += 1
            counts[N_ACCEPTED] += 1
            if i is None:
                counts[N_CORRECTIONS] += 1
            now_ms = int(time.time() * 1000)  # the job reads the clock per unit anyway
            if now_ms >= metrics.due_ms:
                metrics.maybe_flush(now_ms)
        metrics.flush()

    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, run in (("none", none), ("old", old), ("new", new)):
            started = time.thread_time_ns()
            run()
            per_record = (time.thread_time_ns() - started) / records
            best[name] = min(best.get(name, per_record), per_record)
    return best


def main(argv: list[str] | None = None) -> int:
    """Run the job, print and record the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.metric_cost_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    from jobs.runtime import prepare_process_environment

    prepare_process_environment()
    from pyflink.common import Configuration, Types
    from pyflink.datastream import MapFunction, StreamExecutionEnvironment

    from connectors.metrics.flink_reporter import reporter_config

    class Measure(MapFunction):  # type: ignore[misc]
        def open(self, runtime_context: object) -> None:
            self.group = runtime_context.get_metrics_group()  # type: ignore[attr-defined]

        def map(self, value: int) -> str:
            return json.dumps(measure(self.group, args.records, args.repeat))

    conf = Configuration()
    for key, value in {**reporter_config(), "python.execution-mode": "thread",
                       "python.executable": sys.executable}.items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    stream = env.from_collection([1], Types.INT()).map(Measure(), Types.STRING())
    with stream.execute_and_collect("metric-cost-bench") as results:
        figures = json.loads(next(iter(results)))
    doc = {"date": date.today().isoformat(), "records": args.records, "repeat": args.repeat,
           "cpu_ns_per_record": {k: round(v, 1) for k, v in figures.items()},
           "old_minus_none_ns": round(figures["old"] - figures["none"], 1),
           "new_minus_none_ns": round(figures["new"] - figures["none"], 1)}
    print(json.dumps(doc, indent=2))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"metric-cost-{doc['date']}.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
