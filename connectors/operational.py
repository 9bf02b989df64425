"""The operational store: current state per business key for internal services (PostgreSQL; Aurora in AWS).

One table per record type in schema `ops` (claims, payments, eligibility, device_events), holding what the Iceberg table
of that type holds, tokens only, one row per feed and business key: the newest version that feed sent. A version is
(`sent_at_ms`, `record_id`): a later send wins, a replay of the same record or an older version never
overwrites (the tables' trigger, migrations/postgres/, enforces it for every writer). Device events are the
exception (migration 0004): one row per feed and device, the newest reading by (`event_time_ms`, `record_id`).
The columns are the Iceberg tables' own (connectors/iceberg.py), so the two sinks cannot drift apart;
`postgres_columns` is what the migrations must create, and a test compares them with the database.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from connectors.iceberg import TABLE_FOR_TYPE, TABLES, WIRED_LAST
from connectors.sql import with_clause

if TYPE_CHECKING:
    from connectors.properties import IngestConfig, OperationalConfig

SCHEMA = "ops"
ROUTE = "operational"  # the route name feed contracts use (schemas/routes.py)
READER_SECRET = "medistream/operational/ops_reader"  # noqa: S105 -- the name of the reader role's secret
VERSION_COLUMN = "sent_at_ms"  # with record_id, the version a row carries
SIGNALS_TABLE = "fraud_signals"  # the fraud detectors' signals (udfs/fraud.py), one row per signal id
# Flink SQL type (as connectors/iceberg.py writes it) -> PostgreSQL type.
_PG_TYPES = (
    (re.compile(r"^STRING$"), "text"),
    (re.compile(r"^INT$"), "integer"),
    (re.compile(r"^BIGINT$"), "bigint"),
    (re.compile(r"^DATE$"), "date"),
    (re.compile(r"^TIMESTAMP_LTZ\(3\)$"), "timestamp with time zone"),
    (re.compile(r"^DECIMAL\((\d+), (\d+)\)$"), "numeric({0},{1})"),
)


def operational_tables() -> dict[str, str]:
    """Record type -> its table in schema `ops` (the Iceberg table's name)."""
    return dict(TABLE_FOR_TYPE)


def flink_columns(table: str) -> list[tuple[str, str]]:
    """(column, Flink SQL type) of an operational table: the Iceberg table's columns, then `sent_at_ms` (but for
    the fraud signals, which have no versions: a signal is written once, its id the key)."""
    columns = []
    for line in TABLES[table][0].strip().splitlines():
        name, kind = line.strip().rstrip(",").split(" ", 1)
        columns.append((name, kind.removesuffix(" NOT NULL")))
    return columns if table == SIGNALS_TABLE else [*columns, (VERSION_COLUMN, "BIGINT")]


# The JDBC connector's PostgreSQL dialect takes no TIMESTAMP_LTZ: those columns cross as TIMESTAMP(3), the instant
# as wall time in the job's SQL time zone, which the driver sends with the JVM's offset (both the system's own by
# default; UTC on Managed Flink) into timestamptz. A test compares the stored instant with sent_at_ms.
JDBC_TIMESTAMP = "TIMESTAMP(3)"


def jdbc_columns(table: str) -> list[tuple[str, str]]:
    """(column, Flink type) of the JDBC sink table: flink_columns with TIMESTAMP_LTZ(3) as TIMESTAMP(3)."""
    return [(name, JDBC_TIMESTAMP if kind == "TIMESTAMP_LTZ(3)" else kind) for name, kind in flink_columns(table)]


def postgres_type(flink_type: str) -> str:
    """The PostgreSQL type of a Flink SQL type these tables use (ValueError for any other)."""
    for pattern, pg in _PG_TYPES:
        match = pattern.match(flink_type)
        if match:
            return pg.format(*match.groups())
    raise ValueError(f"no PostgreSQL type for Flink type {flink_type!r}")


def postgres_columns(table: str) -> list[tuple[str, str]]:
    """(column, PostgreSQL type as information_schema's format_type names it) the migrations create."""
    return [(name, postgres_type(kind)) for name, kind in flink_columns(table)]


class OperationalStoreError(RuntimeError):
    """The operational store's connection cannot be configured (its secret); the message names no secret value."""


def connection(secrets_client: Any, secret_id: str) -> dict[str, Any]:
    """The RDS-style JSON secret (host, port, dbname, username, password) of one role."""
    from connectors.secrets import read_json_object

    doc = read_json_object(secrets_client, secret_id, f"operational store secret {secret_id}", OperationalStoreError)
    missing = sorted({"host", "port", "dbname", "username", "password"} - set(doc))
    if missing:
        raise OperationalStoreError(f"operational store secret {secret_id}: no {', '.join(missing)}")
    return doc


def jdbc_url(doc: dict[str, Any], cfg: OperationalConfig) -> str:
    """The PostgreSQL JDBC URL of a secret's server, TLS verified against the configured CA."""
    query = urlencode({"sslmode": cfg.sslmode, "sslrootcert": cfg.sslrootcert})
    return f"jdbc:postgresql://{doc['host']}:{int(doc['port'])}/{doc['dbname']}?{query}"


def create_operational_sinks(t_env: Any, cfg: IngestConfig) -> dict[str, str]:
    """One append-only JDBC sink per record type; {record type: Flink table}.

    Append-only, not Flink's upsert mode: an upsert sink's buffer keeps the last row it received per key,
    which is not the newest version when versions arrive out of order. Every row is an INSERT, in arrival
    order, and the table's triggers (migrations/postgres/) keep the newest version per business key: an
    insert of a known key becomes an update, which only a newer version may make. A batch that fails (the
    server down, or two subtasks inserting one new key at once) is retried whole by the sink, then the job
    restarts from its checkpoint: every write is idempotent.
    """
    doc = _writer(cfg)
    return {record_type: _jdbc_sink(t_env, cfg, doc, table) for record_type, table in operational_tables().items()
            if record_type not in WIRED_LAST}


def create_device_events_sink(t_env: Any, cfg: IngestConfig, table: str) -> str:
    """The append-only JDBC sink of ops.<table> (device events): each device's newest reading is kept by the table's
    triggers (migration 0004), whatever order the readings are written in."""
    return _jdbc_sink(t_env, cfg, _writer(cfg), table)


def create_signals_sink(t_env: Any, cfg: IngestConfig) -> str:
    """The append-only JDBC sink of ops.fraud_signals: a signal id seen again is skipped by the table's trigger."""
    return _jdbc_sink(t_env, cfg, _writer(cfg), SIGNALS_TABLE)


def _writer(cfg: IngestConfig) -> dict[str, Any]:
    from connectors.kms import aws_client

    return connection(aws_client(cfg.phi, "secretsmanager"), cfg.operational.secret_id)


def _jdbc_sink(t_env: Any, cfg: IngestConfig, doc: dict[str, Any], table: str) -> str:
    name = f"operational_{table}"
    columns = ",\n".join(f"`{column}` {kind}" for column, kind in jdbc_columns(table))
    options = {
        "connector": "jdbc", "url": jdbc_url(doc, cfg.operational), "table-name": f"{SCHEMA}.{table}",
        "username": str(doc["username"]), "password": str(doc["password"]),
        "sink.buffer-flush.max-rows": str(cfg.operational.flush_rows),
        "sink.buffer-flush.interval": cfg.operational.flush_interval, "sink.max-retries": "3",
    }
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {name} (\n{columns}\n) {with_clause(options)}")
    return name


def _reader(cfg: IngestConfig, secret_id: str = READER_SECRET) -> Any:
    import psycopg

    from connectors.kms import aws_client

    doc = connection(aws_client(cfg.phi, "secretsmanager"), secret_id)
    return psycopg.connect(host=doc["host"], port=int(doc["port"]), dbname=doc["dbname"], user=doc["username"],
                           password=doc["password"], sslmode=cfg.operational.sslmode,
                           sslrootcert=cfg.operational.sslrootcert, connect_timeout=10)


def signal_rows(cfg: IngestConfig) -> list[tuple[Any, ...]]:
    """(signal id, rule, provider NPI, service date, evidence keys, feed) of every row of ops.fraud_signals, read as
    the reader role."""
    # B608 - our own schema and table names, no value
    query = f"SELECT signal_id, rule, provider_npi, service_date, evidence_keys, feed FROM {SCHEMA}.{SIGNALS_TABLE}"  # noqa: S608
    with _reader(cfg) as conn:
        return [tuple(row) for row in conn.execute(query)]


def current_keys(cfg: IngestConfig, feeds: Iterable[str], secret_id: str = READER_SECRET) -> dict[str, Counter[str]]:
    """Rows per business key in each table, for these feeds, read as the reader role: {record type: keys}.

    One row per feed and key is the store's promise: a key counts once per feed that sent it.
    """
    wanted = sorted(set(feeds))
    found: dict[str, Counter[str]] = {}
    with _reader(cfg, secret_id) as conn:
        for record_type, table in operational_tables().items():
            # B608 - the table name is ours (operational_tables), the feeds are bound parameters
            rows = conn.execute(f"SELECT business_key FROM {SCHEMA}.{table} WHERE feed = ANY(%s)",  # noqa: S608
                                (wanted,)).fetchall()
            found[record_type] = Counter(key for (key,) in rows)
    return found
