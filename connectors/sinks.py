"""How each sink is wired into the ingest job: Flink SQL from the deduplicated rows to the sink's tables.

One builder per route name (connectors/registry.py maps the names to them), each adding its INSERT
statements to a RouteContext and returning what it writes. The archive and the dead-letter outputs
take everything; the other sinks take the rows their feed's contract routes to them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connectors.archive import ARCHIVE_COLUMNS, create_archive_sink, create_dead_letter_archive
from connectors.iceberg import TABLE_FOR_TYPE, WIRED_LAST, create_tables
from connectors.kafka import create_curated_sink, create_dead_letter_sink
from connectors.sql import insert_select, quote
from udfs.iceberg_columns import DEAD_LETTER_COLUMNS, FRAUD_SIGNAL_COLUMNS, ICEBERG_COLUMNS
from udfs.routing import routes_column
from udfs.rows import BYTES_FIELDS

if TYPE_CHECKING:
    from connectors.properties import IngestConfig


@dataclass
class RouteContext:
    """What a sink builder wires from: the table environment, the job's config, the rows and the routes in use."""

    t_env: Any
    cfg: IngestConfig
    job_name: str
    partners: tuple[str, ...]  # every partner id a contract routes to: one curated topic each
    rows: str = "deduped"  # the view of accepted, deduplicated rows
    refusals: str = "dead_letter_rows"  # the view of dead letters
    signals: str | None = None  # the view of fraud signals (jobs/fraud_operator.py); None: detectors off
    statements: list[str] = field(default_factory=list)

    def routed(self, route: str) -> str:
        """SQL predicate: the row's contract routes it to `route`."""
        return f"POSITION({quote(routes_column([route]))} IN routes) > 0"

    @functools.cached_property
    def routes_in_use(self) -> frozenset[str]:
        """Every sink name some feed contract routes to (`operational`, `partner:<id>`, ...)."""
        from schemas.contracts import load_contracts

        return frozenset(route.sink for c in load_contracts(self.cfg.feeds.directory).values() for route in c.routes)

    @functools.cached_property
    def iceberg_tables(self) -> dict[str, str]:
        """The Iceberg tables, created (or checked) once per job graph; {name: full name}."""
        return create_tables(self.t_env, self.cfg.iceberg, self.cfg.s3)


def archive_select() -> str:
    """The archive table's columns in SQL over the accepted rows: the large texts cross from the ingest operator as
    UTF-8 bytes (udfs/rows.py BYTES_FIELDS, decision 0058) and are cast back, so the archive's files keep strings."""
    return ", ".join(f"CAST(`{c}` AS STRING) AS `{c}`" if c in BYTES_FIELDS else f"`{c}`"
                     for c in (*ARCHIVE_COLUMNS, "feed", "dt"))


def wire_archive(ctx: RouteContext) -> dict[str, str]:
    """The `archive` route: every accepted row, whatever its routes say (retention is not optional)."""
    table = create_archive_sink(ctx.t_env, ctx.cfg.archive)
    # B608 - Flink SQL over table names from our config and contracts, no record data
    ctx.statements.append(f"INSERT INTO {table} SELECT {archive_select()} FROM {ctx.rows}")
    return {"archive": table}


def wire_dead_letters(ctx: RouteContext) -> dict[str, str]:
    """Every dead letter to the dead-letter archive, the dead-letter topic and the Iceberg dead_letters table."""
    archive = create_dead_letter_archive(ctx.t_env, ctx.cfg.archive)
    topic_table = create_dead_letter_sink(ctx.t_env, ctx.cfg.kafka, ctx.job_name)
    ctx.statements += [
        # B608 - Flink SQL over our own table names (the next line too), no record data
        f"INSERT INTO {archive} SELECT dead_letter_id, reason, body, feed, dt FROM {ctx.refusals}",
        # B608 - Flink SQL over our own table names, no record data
        f"INSERT INTO {topic_table} SELECT dead_letter_id, body FROM {ctx.refusals}",
        insert_select(ctx.iceberg_tables["dead_letters"], DEAD_LETTER_COLUMNS, ctx.refusals),
    ]
    return {"dead_letters:archive": archive, "dead_letters:topic": ctx.cfg.kafka.dlq_topic,
            "dead_letters:iceberg": ctx.iceberg_tables["dead_letters"]}


def wire_tables(ctx: RouteContext) -> dict[str, str]:
    """The `iceberg` route: one table per record type and the claims' service lines, rows the contract routes here."""
    tables, routed = ctx.iceberg_tables, ctx.routed("iceberg")
    for record_type, name in _first_wired(TABLE_FOR_TYPE).items():
        ctx.statements.append(insert_select(tables[name], ICEBERG_COLUMNS[name],
                                            f"{ctx.rows} WHERE record_type = '{record_type}' AND {routed}"))
    ctx.statements.append(insert_select(
        tables["claim_lines"], ICEBERG_COLUMNS["claim_lines"],
        f"""{ctx.rows} CROSS JOIN UNNEST(service_lines) AS l(line)
            WHERE record_type = 'claim' AND {routed}"""))
    return {f"iceberg:{name}": tables[name] for name in (*_first_wired(TABLE_FOR_TYPE).values(), "claim_lines")}


def _first_wired(by_type: dict[str, str]) -> dict[str, str]:
    """The record types' tables these builders wire: all but those wired last (connectors/iceberg.py WIRED_LAST)."""
    return {record_type: table for record_type, table in by_type.items() if record_type not in WIRED_LAST}


def wire_operational(ctx: RouteContext) -> dict[str, str]:
    """The `operational` route: each record type's current-state table in the operational store (PostgreSQL),
    the newest version per business key. Wired only when a contract routes to it: a job with no such route
    needs no database."""
    from connectors.operational import ROUTE, create_operational_sinks, operational_tables

    if ROUTE not in ctx.routes_in_use:
        return {}
    sinks, routed = create_operational_sinks(ctx.t_env, ctx.cfg), ctx.routed(ROUTE)
    for record_type, table in _first_wired(operational_tables()).items():
        columns = {**ICEBERG_COLUMNS[table], "sent_at_ms": "sent_at_ms"}  # operational.flink_columns' order
        ctx.statements.append(insert_select(sinks[record_type], _as_jdbc(table, columns),
                                            f"{ctx.rows} WHERE record_type = '{record_type}' AND {routed}"))
    return {f"operational:{record_type}": f"ops.{table}"
            for record_type, table in _first_wired(operational_tables()).items()}


def _as_jdbc(table: str, columns: dict[str, str]) -> dict[str, str]:
    """An operational table's column expressions in its JDBC sink's order, instants cast as that sink takes them."""
    from connectors.operational import JDBC_TIMESTAMP, jdbc_columns

    return {name: f"CAST({columns[name]} AS {kind})" if kind == JDBC_TIMESTAMP else columns[name]
            for name, kind in jdbc_columns(table)}


def wire_fraud_signals(ctx: RouteContext) -> dict[str, str]:
    """The fraud detectors' signals: the Iceberg table fraud_signals, and ops.fraud_signals where the operational
    store is in use (a contract routes to it). Not a route: every signal goes to both."""
    from connectors.operational import ROUTE, SIGNALS_TABLE, create_signals_sink

    if ctx.signals is None:
        return {}
    table = ctx.iceberg_tables[SIGNALS_TABLE]
    ctx.statements.append(insert_select(table, FRAUD_SIGNAL_COLUMNS, ctx.signals))
    written = {"fraud_signals:iceberg": table}
    if ROUTE in ctx.routes_in_use:
        sink = create_signals_sink(ctx.t_env, ctx.cfg)
        ctx.statements.append(insert_select(sink, _as_jdbc(SIGNALS_TABLE, FRAUD_SIGNAL_COLUMNS), ctx.signals))
        written["fraud_signals:operational"] = f"ops.{SIGNALS_TABLE}"
    return written


def _wire_curated(ctx: RouteContext, index: int, route: str, topic: str, key: str, value: str) -> None:
    # The transactional id is stable per topic: a restore finds the transactions it must abort or commit.
    table = create_curated_sink(ctx.t_env, ctx.cfg.kafka, f"curated_{index}", topic,
                                f"{ctx.job_name}-curated-{route.replace(':', '-')}")
    # B608 - Flink SQL from route names and columns of our contracts, no record data
    ctx.statements.append(f"INSERT INTO {table} SELECT {key}, {value} FROM {ctx.rows} WHERE {ctx.routed(route)}")


def wire_snowflake(ctx: RouteContext) -> dict[str, str]:
    """The `snowflake` route: curated.snowflake keyed by record id, for the Snowflake loader."""
    topic = ctx.cfg.curated.snowflake_topic
    _wire_curated(ctx, 0, "snowflake", topic, "record_id", "curated")
    return {"snowflake": topic}


def wire_partners(ctx: RouteContext) -> dict[str, str]:
    """Each `partner:<id>` route: its curated topic keyed by business key, so one claim's versions stay in order."""
    written = {}
    for index, partner in enumerate(ctx.partners, start=1):
        route, topic = f"partner:{partner}", ctx.cfg.curated.partner_topic(partner)
        _wire_curated(ctx, index, route, topic, "business_key", "partner_curated")
        written[route] = topic
    return written


def wire_device_events(ctx: RouteContext) -> dict[str, str]:
    """The device events' `iceberg` and `operational` routes (decision 0040): the Iceberg table device_events and,
    where a contract routes device events there, ops.device_events (each device's newest reading). Wired after
    every other sink, so the planner's numbers, and with them the uids of every earlier sink, stay as they were."""
    from connectors.operational import ROUTE, create_device_events_sink

    written: dict[str, str] = {}
    for record_type in sorted(WIRED_LAST):
        table = TABLE_FOR_TYPE[record_type]
        rows = f"{ctx.rows} WHERE record_type = '{record_type}'"
        ctx.statements.append(insert_select(ctx.iceberg_tables[table], ICEBERG_COLUMNS[table],
                                            f"{rows} AND {ctx.routed('iceberg')}"))
        written[f"iceberg:{table}"] = ctx.iceberg_tables[table]
        if ROUTE in ctx.routes_in_use:
            sink = create_device_events_sink(ctx.t_env, ctx.cfg, table)
            columns = {**ICEBERG_COLUMNS[table], "sent_at_ms": "sent_at_ms"}
            ctx.statements.append(insert_select(sink, _as_jdbc(table, columns), f"{rows} AND {ctx.routed(ROUTE)}"))
            written[f"operational:{record_type}"] = f"ops.{table}"
    return written
