"""The curated values the ingest operator builds equal, byte for byte, what Flink's JSON format wrote (decision 0046).

The curated topics' values used to be written by the Kafka sink's `value.format` json from the columns; they are
now built once in Python (udfs.curated.curated_value) and written as raw bytes. Here Flink's JSON format (the same
serializer, through a filesystem sink) writes rows of both column sets, and each line must equal our bytes: generated
records' values and values with every character class JSON escapes or passes through (control characters, quotes,
backslashes, a literal backslash-u text, non-ASCII, a character outside the BMP, U+2028, DEL), nulls and large
numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from udfs.curated import CURATED_COLUMNS, PARTNER_CURATED_COLUMNS, curated_value

pytestmark = pytest.mark.flink

AWKWARD = ["\x00\x01\x07\x1f", 'quote " and back \\ slash', "\\u00ab is text, \\\\u00ff too",
           "tab\tnew\nline\r\x08\x0c", "é ü ß 東京", "emoji \U0001f600",
           "line sep \u2028 para \u2029", "del \x7f", "", " ", "/slash/"]


def rows() -> list[dict[str, Any]]:
    """Values of the curated columns: generated records through the real stage (the shipped contracts, static keys),
    then awkward texts in every text field."""
    from tests.flink import json_feed_rows
    from udfs.rows import accepted_texts

    found = [accepted_texts(row) for row in json_feed_rows(60, seed=11, unit_ms=1_700_000_000_000, ingested_ms=1)]
    assert len(found) > 40
    assert any(f["curated"] for f in found) and any(f["partner_curated"] for f in found)  # both routes were taken
    base = found[0]
    for i, text in enumerate(AWKWARD):
        found.append({**base, **{name: text for name, kind in PARTNER_CURATED_COLUMNS if kind == "STRING"},
                      "sent_at_ms": -i, "ingested_at_ms": 2**62 + i})
    found.append({**base, "original_key": None, "sent_at_ms": None, "payload": None, "sealed": None})
    return found


def flink_json_lines(t_env: Any, tmp: Path, columns: tuple[tuple[str, str], ...], values: list[dict[str, Any]]
                     ) -> list[bytes]:
    """Each row as Flink's JSON format writes it: the lines of the sink's files, in the order Flink wrote them."""
    from pyflink.common import Row
    from pyflink.table import DataTypes

    types = {"STRING": DataTypes.STRING(), "BIGINT": DataTypes.BIGINT()}
    name = f"rows_{len(columns)}"
    t_env.create_temporary_view(name, t_env.from_elements(
        [Row(*(v.get(c) for c, _k in columns)) for v in values],
        DataTypes.ROW([DataTypes.FIELD(c, types[k]) for c, k in columns])))
    out = tmp / name
    ddl = ", ".join(f"`{c}` {k}" for c, k in columns)
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {name}_json ({ddl}) WITH ('connector' = 'filesystem', "
                      f"'path' = '{out.as_uri()}', 'format' = 'json')")
    t_env.execute_sql(f"INSERT INTO {name}_json SELECT * FROM {name}").wait()  # noqa: S608 - our own names
    return [line for f in sorted(out.rglob("*")) if f.is_file() and not f.name.startswith(".")
            for line in f.read_bytes().splitlines()]


def test_curated_values_are_what_flinks_json_format_writes(flink_process_env: None, tmp_path: Path) -> None:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    values = rows()
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("parallelism.default", "1")
    for columns in (CURATED_COLUMNS, PARTNER_CURATED_COLUMNS):
        expected = flink_json_lines(t_env, tmp_path, columns, values)
        assert len(expected) == len(values)
        ours = [curated_value(v, columns) for v in values]
        assert sorted(ours) == sorted(expected)  # as sets of lines: the file's order is Flink's
        assert any(b"\\u001F" in line for line in ours)  # the control characters were there to escape


def test_an_escaped_backslash_before_u00_text_is_left_alone() -> None:
    value = curated_value({"payload": "\\u00ab\x1f"}, (("payload", "STRING"),))
    assert value == b'{"payload":"\\\\u00ab\\u001F"}'
