"""Small helpers for the Flink SQL DDL the connector builders emit."""

from __future__ import annotations

from collections.abc import Mapping


def quote(value: str) -> str:
    """A Flink SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def option_list(options: Mapping[str, str]) -> str:
    """('k'='v', ...) from a mapping: what WITH and ALTER TABLE ... SET take."""
    return "(" + ", ".join(f"{quote(k)}={quote(v)}" for k, v in options.items()) + ")"


def with_clause(options: Mapping[str, str]) -> str:
    """WITH ('k'='v', ...) from a mapping."""
    return "WITH " + option_list(options)


def insert_select(table: str, columns: Mapping[str, str], source: str) -> str:
    """INSERT INTO `table` (its columns, in order) SELECT each column's expression FROM `source` (a view + WHERE)."""
    # B608 - Flink SQL: table and column names from our config, each quoted; values are never inlined
    return (f"INSERT INTO {table} ({', '.join(f'`{c}`' for c in columns)}) "
            f"SELECT {', '.join(columns.values())} FROM {source}")
