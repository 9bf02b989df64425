"""The ingest job: raw feeds (Kafka + landing files) -> checked records -> Iceberg, archive, DLQ.

Thread-mode PyFlink: sources and sinks are Java (SQL connectors), the record logic is one Python
operator (udfs.ingest.IngestStage). Exactly-once end to end: source positions live in checkpoints,
and every sink commits on checkpoint completion (Iceberg snapshot, FileSink part files, Kafka
transactions). Run: `python -m jobs.ingest [--restore PATH]`; SIGTERM/SIGINT stop it with a savepoint.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.archive import create_archive_sink
from connectors.iceberg import create_claims_table
from connectors.kafka import create_dead_letter_sink, create_raw_source
from connectors.landing import create_landing_source
from jobs import preflight
from jobs.config import (
    DEFAULT_JOB_NAME,
    IngestConfig,
    default_properties_path,
    load_ingest_config,
    read_property_groups,
)
from jobs.ingest_operator import ACCEPTED_TYPE, CLAIMS, DEAD_LETTERS, IngestOperator
from jobs.runtime import (
    flink_configuration,
    initialize_filesystems,
    latest_restore_point,
    prepare_process_environment,
    savepoint_directory,
    stop_with_savepoint,
)

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

JOB_NAME = DEFAULT_JOB_NAME
log = logging.getLogger("medistream.ingest")


@dataclass(frozen=True)
class JobOutputs:
    """Names of the tables the job writes, for callers that read the results back."""

    claims_table: str
    archive_table: str
    dead_letter_table: str


def build(
    env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, cfg: IngestConfig, job_name: str = JOB_NAME
) -> JobOutputs:
    """Wire sources -> IngestOperator -> sinks into one statement set attached to `env`.

    `job_name` prefixes the dead-letter sink's Kafka transactional ids: two jobs that share it would
    abort each other's open transactions on start-up, so concurrent runs need distinct names.
    """
    raw = create_raw_source(t_env, cfg.kafka)
    landing = create_landing_source(t_env, cfg.landing)
    unified = t_env.sql_query(
        f"""SELECT payload, topic, `partition`, `offset`, CAST(NULL AS STRING) AS path FROM {raw}
            UNION ALL
            SELECT payload, CAST(NULL AS STRING), CAST(NULL AS INT), CAST(NULL AS BIGINT), path FROM {landing}"""
    )
    accepted = (
        t_env.to_data_stream(unified)
        .process(IngestOperator(cfg.landing.path), output_type=ACCEPTED_TYPE)
        .name("ingest")
    )

    claims_table = create_claims_table(t_env, cfg.iceberg, cfg.s3)
    archive_table = create_archive_sink(t_env, cfg.archive)
    dlq_table = create_dead_letter_sink(t_env, cfg.kafka, job_name)
    t_env.create_temporary_view("accepted", t_env.from_data_stream(accepted))
    t_env.create_temporary_view("claim_rows", t_env.from_data_stream(accepted.get_side_output(CLAIMS)))
    t_env.create_temporary_view("dead_letter_rows", t_env.from_data_stream(accepted.get_side_output(DEAD_LETTERS)))

    statements = t_env.create_statement_set()
    statements.add_insert_sql(f"INSERT INTO {archive_table} SELECT * FROM accepted")
    statements.add_insert_sql(f"INSERT INTO {dlq_table} SELECT dead_letter_id, body FROM dead_letter_rows")
    statements.add_insert_sql(
        f"""INSERT INTO {claims_table} SELECT
              record_id, feed, claim_id, frequency_code, payer_id, billing_npi, rendering_npi,
              CAST(service_date_from AS DATE), CAST(service_date_to AS DATE), place_of_service,
              primary_diagnosis, diagnosis_count, service_line_count,
              CAST(total_charge AS DECIMAL(14, 2)), TO_TIMESTAMP_LTZ(sent_at_ms, 3),
              CAST(sent_date AS DATE), source, TO_TIMESTAMP_LTZ(ingested_at_ms, 3)
            FROM claim_rows"""
    )
    statements.attach_as_datastream()
    return JobOutputs(claims_table=claims_table, archive_table=archive_table, dead_letter_table=dlq_table)


def create_environments(cfg: IngestConfig, restore_from: str | None) -> tuple[Any, Any]:
    """A streaming environment (mini-cluster locally) and its table environment."""
    prepare_process_environment()
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import EnvironmentSettings, StreamTableEnvironment

    conf = flink_configuration(cfg.checkpoints, cfg.runtime, cfg.s3, restore_from)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    initialize_filesystems(conf)
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("pipeline.name", JOB_NAME)
    return env, t_env


def main(argv: list[str] | None = None) -> int:
    """Load config, check dependencies, build, run until stopped; SIGTERM -> stop with savepoint."""
    parser = argparse.ArgumentParser(prog="python -m jobs.ingest", description=__doc__)
    parser.add_argument("--properties", help="application_properties.json (default: MSF path or conf/)")
    parser.add_argument("--restore", help="checkpoint or savepoint directory to resume from "
                        "(default: the newest one under the configured directories)")
    parser.add_argument("--fresh", action="store_true", help="start without restoring any state")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    groups = read_property_groups(Path(args.properties) if args.properties else default_properties_path())
    cfg = load_ingest_config(groups)
    preflight.check_ingest_dependencies(cfg)
    restore = None if args.fresh else args.restore or latest_restore_point(cfg.checkpoints)
    env, t_env = create_environments(cfg, restore)
    build(env, t_env, cfg, job_name=cfg.runtime.job_name)
    client = env.execute_async(cfg.runtime.job_name)
    log.info("job %s running (restored from %s)", client.get_job_id(), restore or "nothing")

    stop_requested: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop_requested.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stop_requested.append(signum))
    while not stop_requested:
        status = str(client.get_job_status().result())
        if status in ("FAILED", "CANCELED", "FINISHED"):
            log.error("job ended on its own with status %s; see the Flink log", status)
            return 1
        time.sleep(1)
    path = stop_with_savepoint(client, savepoint_directory(cfg.checkpoints))
    log.info("stopped with savepoint %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
