"""The ingest job: raw feeds (Kafka + landing files) -> checked, deduplicated, routed records -> every sink.

Sinks: Iceberg (one table per record type, claim lines, dead letters), the encrypted archive (records
and dead letters), the dead-letter topic, and the curated hand-off topics `curated.snowflake` and
`curated.partner.<id>` that the delivery jobs read. Routes come from the feed contracts
(udfs/routing.py); the archive takes everything.

Thread-mode PyFlink: sources, dedup and sinks are Java (connectors and Flink SQL), the record logic
is one Python operator (udfs.ingest.IngestStage) driven by the feed contracts in schemas/feeds/,
with reference data broadcast to it. Exactly-once end to end: source positions live in checkpoints,
and every sink commits on checkpoint completion (Iceberg snapshot, FileSink part files, Kafka
transactions). Run: `python -m jobs.ingest [--restore PATH]`; SIGTERM/SIGINT stop it with a savepoint.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyflink.datastream.functions import KeyedProcessFunction

from connectors.kafka import create_raw_source
from connectors.landing import create_landing_source
from connectors.properties import (
    DEFAULT_JOB_NAME,
    IngestConfig,
    batch_ingest_config,
    default_properties_path,
    duration_ms,
    load_batch_path,
    load_ingest_config,
    read_property_groups,
)
from connectors.reference import create_reference_stream
from connectors.registry import wire_sinks
from connectors.sinks import RouteContext
from fresh_imports import FreshImports
from jobs import preflight
from jobs.event_time_operator import DEVICE_EVENTS, EVENT_TYPE, LATE_EVENTS, EventTimeGate
from jobs.fraud_operator import fraud_detectors, fraud_facts
from jobs.ingest_operator import ACCEPTED_TYPE, DEAD_LETTERS, REFERENCE_STATE, IngestOperator
from jobs.plan_uids import keep_uids_without
from jobs.runtime import (
    STABLE_UID_TABLE_KEYS,
    add_operator_ids_option,
    expiring,
    flink_configuration,
    initialize_filesystems,
    keyed_by_first_field,
    prepare_process_environment,
    restore_point,
    run_submitted,
    side_output,
    write_operator_ids,
)
from jobs.topics import partner_ids
from udfs.rows import ACCEPTED_FIELDS
from udfs.source import BACKFILL_PATH_PATTERN, ORIGIN_HEADER, ORIGIN_PATTERN

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

JOB_NAME = DEFAULT_JOB_NAME
GATE_UID = "device-event-time"  # the device events' event-time gate (decision 0040)
log = logging.getLogger("medistream.ingest")


@dataclass(frozen=True)
class JobOutputs:
    """What the job writes, by sink label (`archive`, `iceberg:claims`, `partner:<id>`, ...): table or topic."""

    written: dict[str, str]


class FirstPerKey(FreshImports, KeyedProcessFunction):  # type: ignore[misc]
    """Pass the first row of each key and drop the others, remembering a key for `ttl_ms` (processing time)."""

    def __init__(self, ttl_ms: int) -> None:
        self.ttl_ms = ttl_ms

    def open(self, ctx: Any) -> None:
        from pyflink.common import Types
        from pyflink.datastream.state import ValueStateDescriptor

        self.seen = ctx.get_state(expiring(ValueStateDescriptor("seen", Types.BOOLEAN()), self.ttl_ms))

    def process_element(self, value: Any, ctx: Any) -> Any:
        if not self.seen.value():
            self.seen.update(True)
            yield value


def build(
    env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, cfg: IngestConfig, job_name: str = JOB_NAME,
    landing_root: str | None = None, kafka: bool = True,
) -> JobOutputs:
    """Wire sources -> IngestOperator (+ reference broadcast) -> dedup -> routed sinks into one statement set.

    `job_name` prefixes the Kafka sinks' transactional ids: two jobs that share it would abort each
    other's open transactions on start-up, so concurrent runs need distinct names. A bounded batch run
    (tools/batch.py, decision 0026) reads no Kafka (`kafka=False`) and only one date's folder
    (`cfg.landing.path`), below `landing_root`, whose first folder names the feed.
    """
    from pyflink.common import Types
    from pyflink.table import Schema

    t_env.create_temporary_view("landing_files", t_env.from_data_stream(create_landing_source(env, cfg.landing)))
    # One stream of units: a Kafka message or a whole landed file, with a time for records that carry none.
    # A unit re-read by a backfill (tools/backfill.py) keeps the identity of the unit it copies: its topic,
    # partition and offset (header `medistream-origin`, honoured only within the same topic and partition,
    # for an earlier offset) or its file path and time (`<feed>/backfill/<run>/<modified ms>/<original key>`,
    # only for the same feed). So its records get the same record ids and dead-letter ids as the first time,
    # and the dedup stages below drop what was already delivered.
    t_env.create_temporary_view("landing_origins", t_env.sql_query(
        # B608 - Flink SQL over our own table and column names
        f"""SELECT payload, path, modified_ms,
                   CASE WHEN REGEXP(path, '{BACKFILL_PATH_PATTERN}')
                         AND POSITION(CONCAT(REGEXP_EXTRACT(path, '{BACKFILL_PATH_PATTERN}', 2), '/')
                                      IN REGEXP_EXTRACT(path, '{BACKFILL_PATH_PATTERN}', 4)) = 1
                        THEN CONCAT(REGEXP_EXTRACT(path, '{BACKFILL_PATH_PATTERN}', 1),
                                    REGEXP_EXTRACT(path, '{BACKFILL_PATH_PATTERN}', 4)) END AS origin_path,
                   CAST(REGEXP_EXTRACT(path, '{BACKFILL_PATH_PATTERN}', 3) AS BIGINT) AS origin_ms
            FROM landing_files"""))
    landing_units = """SELECT payload, CAST(NULL AS STRING) AS topic, CAST(NULL AS INT) AS `partition`,
                   CAST(NULL AS BIGINT) AS `offset`, COALESCE(origin_path, path) AS path,
                   CASE WHEN origin_path IS NULL THEN modified_ms ELSE origin_ms END AS unit_ms
            FROM landing_origins"""
    unified = _with_kafka_units(t_env, cfg, landing_units) if kafka else t_env.sql_query(landing_units)
    reference = create_reference_stream(env, cfg.reference).broadcast(REFERENCE_STATE)
    operator = IngestOperator(landing_root or cfg.landing.path, cfg.feeds.contracts_dir, cfg.reference.path, cfg.s3,
                              cfg.phi, event_time=cfg.event_time)
    accepted = (
        t_env.to_data_stream(unified).connect(reference)
        .process(operator, output_type=ACCEPTED_TYPE)
        .uid("ingest")
        .name("ingest")
    )
    # Device events pass an event-time gate first (decision 0040): keyed by device token, each device's watermark in
    # keyed state; the late ones become dead letters, the others join the accepted rows before the dedup.
    gated = (keyed_by_first_field(side_output(accepted, DEVICE_EVENTS), Types.STRING(), EVENT_TYPE)
             .process(EventTimeGate(cfg.event_time), output_type=ACCEPTED_TYPE)
             .uid(GATE_UID)
             .name(GATE_UID))

    # Each stream becomes a table of its own and SQL unions them (decision 0049): the ingest operator's rows then go
    # straight into their conversion, in the ingest task, instead of through the network to a conversion task of
    # their own (an operator with two inputs, as a DataStream union makes it, is never chained to either).
    with_time = Schema.new_builder().column_by_expression("proc_time", "PROCTIME()").build()
    t_env.create_temporary_view("accepted_records", t_env.from_data_stream(accepted, with_time))
    t_env.create_temporary_view("gated_events", t_env.from_data_stream(gated, with_time))
    t_env.create_temporary_view("accepted", t_env.sql_query(
        "SELECT * FROM accepted_records UNION ALL SELECT * FROM gated_events"))
    # Dead letters once per id (decision 0024): an id is the unit, the position in it and the refused content,
    # so the same id again is the same unit read again (a backfill's copy), never another record. A DataStream
    # operator with its own uid, not SQL: a new SQL operator renumbers every plan node after it, and with them
    # the uids of the sinks' state, so a savepoint of the previous version would not restore into this one.
    letters = side_output(accepted, DEAD_LETTERS).union(side_output(gated, LATE_EVENTS))
    once = (letters.key_by(lambda row: row[0], key_type=Types.STRING())
            .process(FirstPerKey(duration_ms(cfg.feeds.dedup_ttl)), output_type=letters.get_type())
            .uid("dead-letters-once")
            .name("dead-letters-once"))
    t_env.create_temporary_view("dead_letter_rows", t_env.from_data_stream(once))
    # Dedup in the JVM (docs/decisions/0004-dedup-state.md): keep the first record per dedup key
    # (business key + content hash) for the TTL; Flink plans this as its Deduplicate operator,
    # which keeps one flag per key.
    t_env.get_config().set("table.exec.state.ttl", cfg.feeds.dedup_ttl)
    t_env.create_temporary_view("deduped", t_env.sql_query(
        # B608 - Flink SQL over our own field names (ACCEPTED_FIELDS)
        f"""SELECT {", ".join(f"`{f}`" for f in ACCEPTED_FIELDS)} FROM (
              SELECT *, ROW_NUMBER() OVER (PARTITION BY dedup_key ORDER BY proc_time ASC) AS rn FROM accepted)
            WHERE rn = 1"""
    ))

    # The fraud detectors (udfs/fraud.py): accepted claims and eligibility as facts, projected from the accepted rows
    # and decided over each member's evidence in the JVM (decisions 0054 and 0055), keyed by member token, before the
    # dedup (a re-send adds nothing to a detector's sets). Operators with their own uids, like the dead letters'
    # once-only step above.
    signals = None
    if cfg.fraud.enabled:
        detected = fraud_detectors(fraud_facts(accepted, ACCEPTED_TYPE), ACCEPTED_TYPE, cfg.fraud.rules, job_name)
        t_env.create_temporary_view("fraud_signal_rows", t_env.from_data_stream(detected))
        signals = "fraud_signal_rows"

    # Every sink by its route name (connectors/registry.py): the archive and the dead-letter outputs take
    # everything, the others the rows their contract routes to them, the signals' sinks every signal.
    ctx = RouteContext(t_env, cfg, job_name, partners=tuple(partner_ids(cfg)), rows="deduped",
                       refusals="dead_letter_rows", signals=signals)
    written = wire_sinks(ctx)
    statements = t_env.create_statement_set()
    for statement in ctx.statements:
        statements.add_insert_sql(statement)
    statements.attach_as_datastream()
    # The gated events' own table renumbered the SQL operators after it; they keep the uids they had before.
    keep_uids_without(env, (GATE_UID,))
    return JobOutputs(written)


def _with_kafka_units(t_env: StreamTableEnvironment, cfg: IngestConfig, landing_units: str) -> Any:
    """Kafka units (raw.<feed>; backfill copies read as their originals) and landed files, as one table."""
    raw = create_raw_source(t_env, cfg.kafka)
    t_env.create_temporary_view("raw_units", t_env.sql_query(
        # B608 - Flink SQL over our own table names
        f"""SELECT payload, topic, `partition`, `offset`, `timestamp`,
                   DECODE(headers['{ORIGIN_HEADER}'], 'UTF-8') AS origin FROM {raw}"""))
    t_env.create_temporary_view("raw_origins", t_env.sql_query(
        # B608 - Flink SQL over our own table names
        f"""SELECT payload, topic, `partition`, `offset`, `timestamp`,
                   CASE WHEN REGEXP(origin, '{ORIGIN_PATTERN}')
                         AND REGEXP_EXTRACT(origin, '{ORIGIN_PATTERN}', 1) = topic
                         AND CAST(REGEXP_EXTRACT(origin, '{ORIGIN_PATTERN}', 2) AS INT) = `partition`
                         AND CAST(REGEXP_EXTRACT(origin, '{ORIGIN_PATTERN}', 3) AS BIGINT) < `offset`
                        THEN CAST(REGEXP_EXTRACT(origin, '{ORIGIN_PATTERN}', 3) AS BIGINT) END AS origin_offset
            FROM raw_units"""))
    return t_env.sql_query(
        # B608 - Flink SQL over our own table names
        f"""SELECT payload, topic, `partition`, COALESCE(origin_offset, `offset`) AS `offset`,
                   CAST(NULL AS STRING) AS path,
                   -- Epoch seconds: format and parse in the same session time zone, so the zone cancels out.
                   UNIX_TIMESTAMP(DATE_FORMAT(`timestamp`, 'yyyy-MM-dd HH:mm:ss'), 'yyyy-MM-dd HH:mm:ss') * 1000
                     AS unit_ms FROM raw_origins
            UNION ALL
            {landing_units}""")


def create_environments(cfg: IngestConfig, restore_from: str | None,
                        cluster_extra: dict[str, str] | None = None) -> tuple[Any, Any]:
    """A streaming environment (mini-cluster locally, with `cluster_extra` settings) and its table environment."""
    prepare_process_environment(cfg.runtime)
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import EnvironmentSettings, StreamTableEnvironment

    conf = flink_configuration(cfg.checkpoints, cfg.runtime, cfg.s3, restore_from, cluster_extra=cluster_extra)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    # Chained operators hand rows on without a deep copy (decision 0022): the copies of each row, one per
    # sink, were a fifth of the sinks' CPU. Flink's SQL operators and the Java sinks keep no row they are
    # handed, and the Python operator converts its input before it returns.
    env.get_config().enable_object_reuse()
    if cfg.runtime.deployment == "embedded":
        initialize_filesystems(conf)
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("pipeline.name", JOB_NAME)
    # Operator ids that do not depend on parallelism (decision 0020): without a uid an operator's id
    # follows operator chaining, which follows parallelism, and a savepoint then does not restore at
    # another parallelism (a rescale, Managed Flink's autoscaling). Every SQL operator gets a uid from
    # its plan node, and the Iceberg sinks are the SinkV2 ones, whose writer and committer take theirs
    # from the sink's (the older sink's committer has none to give).
    for key, value in STABLE_UID_TABLE_KEYS.items():
        t_env.get_config().set(key, value)
    return env, t_env


def main(argv: list[str] | None = None) -> int:
    """Load config, check dependencies, build, run until stopped; SIGTERM -> stop with savepoint."""
    parser = argparse.ArgumentParser(prog="python -m jobs.ingest", description=__doc__)
    parser.add_argument("--properties", help="application_properties.json (default: MSF path or conf/)")
    parser.add_argument("--restore", help="checkpoint or savepoint directory to resume from "
                        "(default: the newest one under the configured directories)")
    parser.add_argument("--fresh", action="store_true", help="start without restoring any state")
    parser.add_argument("--batch", nargs=2, metavar=("FEED", "DATE"),
                        help="the job of a bounded batch run (tools/batch.py): no Kafka, the landing source on "
                             "<batch.path>FEED/DATE/ only, the feed's own job name and checkpoints")
    parser.add_argument("--rest-port", type=int, help="embedded: serve Flink's REST API on 127.0.0.1:PORT")
    add_operator_ids_option(parser)
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    groups = read_property_groups(Path(args.properties) if args.properties else default_properties_path())
    cfg = load_ingest_config(groups)
    batch_root = load_batch_path(groups) if args.batch else None
    if batch_root:
        cfg = batch_ingest_config(cfg, batch_root, *args.batch)
    preflight.check_ingest_dependencies(cfg)
    restore = restore_point(cfg.runtime, cfg.checkpoints, args.restore, args.fresh)
    rest = {"rest.port": str(args.rest_port), "metrics.fetcher.update-interval": "250 ms"} if args.rest_port else None
    env, t_env = create_environments(cfg, restore, cluster_extra=rest)
    build(env, t_env, cfg, job_name=cfg.runtime.job_name, landing_root=batch_root, kafka=batch_root is None)
    if args.operator_ids:
        return write_operator_ids(env, args.operator_ids)
    client = env.execute_async(cfg.runtime.job_name)
    log.info("job %s running (restored from %s)", client.get_job_id(), restore or "nothing")

    return run_submitted(client, cfg.runtime, cfg.checkpoints, log)


if __name__ == "__main__":
    sys.exit(main())
