"""The operational store: current state per business key for internal services (PostgreSQL; Aurora in AWS).

One table per record type in schema `ops` (claims, payments, eligibility), holding what the Iceberg table
of that type holds, tokens only, one row per business key: the newest version. A version is
(`sent_at_ms`, `record_id`): a later send wins, a replay of the same record or an older version never
overwrites (the tables' trigger, migrations/postgres/, enforces it for every writer). The columns are the
Iceberg tables' own (connectors/iceberg.py), so the two sinks cannot drift apart; `postgres_columns` is
what the migrations must create, and a test compares them with the database.
"""

from __future__ import annotations

import re

from connectors.iceberg import TABLE_FOR_TYPE, TABLES

SCHEMA = "ops"
VERSION_COLUMN = "sent_at_ms"  # with record_id, the version a row carries
KEY_COLUMN = "business_key"
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
    """(column, Flink SQL type) of an operational table: the Iceberg table's columns, then `sent_at_ms`."""
    columns = []
    for line in TABLES[table][0].strip().splitlines():
        name, kind = line.strip().rstrip(",").split(" ", 1)
        columns.append((name, kind.removesuffix(" NOT NULL")))
    return [*columns, (VERSION_COLUMN, "BIGINT")]


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
