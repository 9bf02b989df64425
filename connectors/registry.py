"""Sinks and doors by the names the feed contracts use, with the guarantee each one gives.

SINKS maps a route name (schemas/routes.py; `partner` stands for every `partner:<id>`) to the
builder that wires it into the ingest job; `dead_letters` and `fraud_signals` are the sinks no contract
names: every refusal reaches the first, every signal of the fraud detectors (udfs/fraud.py) the second.
DOORS maps a contract source name (`sources:` in a feed contract) to the doors records come in through.
The ingest job wires its outputs only through SINKS (the builders are in connectors/sinks.py);
tests/contract/ runs one suite over every entry of both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from connectors.sinks import (
    RouteContext,
    wire_archive,
    wire_dead_letters,
    wire_device_events,
    wire_fraud_signals,
    wire_operational,
    wire_partners,
    wire_snowflake,
    wire_tables,
)
from schemas.routes import is_partner_sink


@dataclass(frozen=True)
class Sink:
    """A route's sink: its builder, the job that makes records visible there, and its promises."""

    build: Callable[[RouteContext], dict[str, str]]  # adds its INSERTs to ctx; returns {label: table or topic}
    visible_via: str  # the job whose commit makes a record visible to its readers
    guarantee: str
    ordered_by: str | None = None  # records with one value of this key arrive in order; None: no order promised


@dataclass(frozen=True)
class Door:
    """A way records come in: the job that runs it and what it promises."""

    name: str
    job: str  # the entry-point module (`python -m <job>`)
    guarantee: str


SINKS: dict[str, Sink] = {
    "archive": Sink(
        wire_archive, "jobs.ingest",
        "every accepted record once, whatever the routes say; Avro part files are committed when the "
        "checkpoint that holds them completes (7-year retention)"),
    "dead_letters": Sink(
        wire_dead_letters, "jobs.ingest",
        "every refusal once, PHI-free: on the dead-letter topic (transactional), in the dead-letter archive and "
        "the Iceberg dead_letters table, each committed with the checkpoint"),
    "iceberg": Sink(
        wire_tables, "jobs.ingest",
        "one snapshot per checkpoint: rows are visible exactly once, after the checkpoint that holds them completes"),
    "snowflake": Sink(
        wire_snowflake, "jobs.snowflake_load",
        "curated.snowflake is written in one Kafka transaction per checkpoint; the loader appends each record "
        "once, its channel's offset token committed with the rows"),
    "partner": Sink(
        wire_partners, "jobs.partner_delivery",
        "curated.partner.<id> is keyed by business key; the delivery job sends each record once per partner "
        "with an idempotency key, one key's versions one at a time in topic order, and records the outcome in "
        "its ledger", ordered_by="business_key"),
    # Last: a sink added at the end leaves the planner's ids (hence uids) of every earlier sink as they were, so a
    # savepoint of the job before it restores (decision 0020).
    "operational": Sink(
        wire_operational, "jobs.ingest",
        "the newest version of each business key, one row per key in its record type's table: every row is "
        "inserted at least once (batches flushed at each checkpoint, retried, replayed after a restart) and the "
        "table's triggers keep the newest (sent_at_ms, record_id), so a replay changes nothing"),
    "fraud_signals": Sink(
        wire_fraud_signals, "jobs.ingest",
        "every signal of the fraud detectors once: in the Iceberg table fraud_signals with the checkpoint (the "
        "detectors' state is restored with it), and in ops.fraud_signals where the operational store is in use, "
        "whose trigger skips a signal id it holds"),
    # After the signals for the same reason as `operational`: wired last, it leaves every earlier uid as it was.
    "device_events": Sink(
        wire_device_events, "jobs.ingest",
        "device events that passed the event-time gate: each reading once in the Iceberg table device_events with "
        "the checkpoint, and in ops.device_events each device's newest reading by event time (the table's triggers "
        "keep it; a replay, an older or a late-allowed reading changes nothing)"),
}

DOORS: dict[str, tuple[Door, ...]] = {
    "kafka": (Door("raw_topics", "jobs.ingest",
                   "raw.<feed> read read_committed; offsets live in checkpoints, so a restore reads each message "
                   "once"),),
    "landing": (Door("landing_files", "jobs.ingest",
                     "each file under <landing>/<feed>/ is read once; the files seen live in checkpoints"),
                Door("sftp_pull", "jobs.sftp_pull",
                     "each settled remote file lands once, whole, under its content digest; a ledger in DynamoDB "
                     "skips it on the next listing, and a puller killed anywhere redoes at most its current step")),
    "rest": (Door("ingest_api", "jobs.ingest_api",
                  "202 only after the unit is on raw.<feed>; an Idempotency-Key is claimed before producing, so "
                  "a retry with it lands nothing new"),
             Door("rest_pull", "jobs.rest_pull",
                  "each page and its cursor commit in one Kafka transaction: a restart resumes after the last "
                  "committed page")),
    "kinesis": (Door("kinesis_pull", "jobs.kinesis_pull",
                     "each Kinesis record lands on raw.<feed> once: a batch and its shard's cursor commit in one Kafka "
                     "transaction before the KCL checkpoint, and records read again after a crash are skipped up to "
                     "the cursor (decision 0039)"),),
}


def route_kind(route: str) -> str:
    """The SINKS key of a contract route: `partner:<id>` -> `partner`, others as they are."""
    return "partner" if is_partner_sink(route) else route


def wire_sinks(ctx: RouteContext) -> dict[str, str]:
    """Wire every sink into ctx.statements; return {label: table or topic} of everything written."""
    written: dict[str, str] = {}
    for sink in SINKS.values():
        written.update(sink.build(ctx))
    return written
