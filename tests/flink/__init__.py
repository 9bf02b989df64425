"""Tests of PyFlink pieces on the mini-cluster, in thread mode as the jobs run them."""

from __future__ import annotations

import sys
from typing import Any


def thread_mode_env(settings: dict[str, str] | None = None) -> Any:
    """A streaming environment at parallelism 1 in thread mode, with the jobs' interpreter and dependencies jar, and
    these other Flink settings."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    from jobs.runtime import DEPENDENCIES_JAR

    conf = Configuration()
    conf.set_string("python.execution-mode", "thread")
    # The job's own interpreter, as every job sets it (jobs/runtime.py); unset, thread mode asks `python` on the
    # PATH where libpython is, and that answer depended on which test had started the gateway first.
    conf.set_string("python.executable", sys.executable)
    conf.set_string("pipeline.jars", DEPENDENCIES_JAR.as_uri())
    conf.set_string("pipeline.classpaths", DEPENDENCIES_JAR.as_uri())
    for key, value in (settings or {}).items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    return env


def json_feed_rows(n: int, seed: int, unit_ms: int, ingested_ms: int) -> list[tuple[Any, ...]]:
    """The ingest operator's accepted rows (udfs.rows.accepted_values) for `n` generated records of every JSON feed
    on Kafka: the shipped contracts, static keys, every record type those feeds carry."""
    from infra.local import synthetic
    from infra.local.reference import reference_data
    from infra.local.static_keys import static_protectors
    from schemas.contracts import load_contracts
    from udfs.ingest import Accepted, IngestStage
    from udfs.rows import accepted_values
    from udfs.source import SourceRef

    contracts = {name: c for name, c in load_contracts().items() if c.format == "json" and "kafka" in c.sources}
    stage = IngestStage(contracts, static_protectors(tuple({c.phi_policy for c in contracts.values()})),
                        reference_data(seed))
    carried = {c.record_type for c in contracts.values()}
    mix = synthetic.Mix(**{t: (1.0 if t in carried else 0.0) for t in ("claim", "payment", "eligibility")})
    rows = []
    for offset, item in enumerate(synthetic.generate(n, seed=seed, mix=mix, duplicate_rate=0, invalid_rate=0,
                                                     feeds=synthetic.feeds_from_contracts(contracts.values()))):
        source = SourceRef.from_kafka(f"raw.{item.feed}", 0, offset)
        rows += [accepted_values(o, source.pointer(), ingested_ms) for o in stage.process(item.payload, source, unit_ms)
                 if isinstance(o, Accepted)]
    return rows
