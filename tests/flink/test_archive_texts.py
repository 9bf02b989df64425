"""The archive's files keep the record's texts as the ingest operator made them (decision 0058).

The ingest operator hands `payload`, `sealed` and `enrichment` to the JVM as UTF-8 bytes, and the archive's SQL
(connectors.sinks.archive_select) casts them back to strings. Here that SQL writes rows through the archive's own
sink definition (zstandard Avro, partitioned by feed and day), and the files read back with fastavro must hold every
text exactly: the operator's rows for generated records, and texts with every character class (non-ASCII, outside
the BMP, control characters, quotes), an empty text and nulls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.flink

AWKWARD = ["é ü ß 東京", "emoji \U0001f600 and \U0001d11e", '{"quote": "\\"", "nul": "\\u0000"}', "\x00\x1f\x7f",
           "line sep \u2028", "", " "]


def accepted_rows() -> list[tuple[Any, ...]]:
    """The ingest operator's accepted rows for generated records of every JSON feed on Kafka (the shipped contracts,
    static keys), then copies of the first with awkward texts and nulls in the three byte fields."""
    from tests.flink import json_feed_rows
    from udfs.rows import ACCEPTED_FIELDS

    rows = json_feed_rows(30, seed=7, unit_ms=1, ingested_ms=1)
    assert len(rows) > 20
    texts = [ACCEPTED_FIELDS.index(f) for f in ("payload", "sealed", "enrichment")]
    for i, text in enumerate([*AWKWARD, None]):
        row = list(rows[0])
        row[ACCEPTED_FIELDS.index("record_id")] = f"awkward-{i}"
        for at in texts:
            row[at] = None if text is None else text.encode()
        rows.append(tuple(row))
    return rows


def test_the_archive_holds_each_text_as_the_operator_made_it(flink_process_env: None, tmp_path: Path) -> None:
    import fastavro
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from connectors.archive import ARCHIVE_COLUMNS, ArchiveConfig, create_archive_sink
    from connectors.sinks import archive_select
    from jobs.runtime import DEPENDENCIES_JAR
    from udfs.rows import ACCEPTED_FIELDS, BYTES_FIELDS, LONG_FIELDS, accepted_texts

    rows = accepted_rows()
    columns = (*ARCHIVE_COLUMNS, "feed", "dt")
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("parallelism.default", "1")
    t_env.get_config().set("pipeline.jars", DEPENDENCIES_JAR.as_uri())  # the job's formats: Avro, zstandard
    kinds = {c: "BYTES" if c in BYTES_FIELDS else "BIGINT" if c in LONG_FIELDS else "STRING" for c in columns}
    index = {c: ACCEPTED_FIELDS.index(c) for c in columns}
    values = ", ".join(f"({', '.join(_literal(row[index[c]], kinds[c]) for c in columns)})" for row in rows)
    # A VALUES list, not from_elements: PyFlink's Python-side conversion would itself be one more path for the texts.
    t_env.execute_sql(f"CREATE TEMPORARY VIEW accepted_rows ({', '.join(f'`{c}`' for c in columns)}) AS "  # noqa: S608
                      f"SELECT * FROM (VALUES {values})")
    table = create_archive_sink(t_env, ArchiveConfig(path=(tmp_path / "archive").as_uri(),
                                                     dead_letters_path=(tmp_path / "dead").as_uri()))
    t_env.execute_sql(f"INSERT INTO {table} SELECT {archive_select()} FROM accepted_rows").wait()  # noqa: S608

    archived = {}
    for path in (tmp_path / "archive").rglob("*"):
        if path.is_file() and not path.name.startswith((".", "_")):
            with path.open("rb") as f:
                archived |= {r["record_id"]: r for r in fastavro.reader(f)}
    expected = {texts["record_id"]: texts for texts in map(accepted_texts, rows)}
    assert set(archived) == set(expected)
    for record_id, record in archived.items():
        assert {c: record[c] for c in ARCHIVE_COLUMNS} == {c: expected[record_id][c] for c in ARCHIVE_COLUMNS}


def _literal(value: Any, kind: str) -> str:
    """A SQL literal of `kind` for `value`: bytes as hex (X'…'), texts quoted, nulls typed."""
    if value is None:
        return f"CAST(NULL AS {kind})"
    if kind == "BYTES":
        return f"X'{value.hex()}'"
    if kind == "BIGINT":
        return f"CAST({int(value)} AS BIGINT)"
    return "'" + str(value).replace("'", "''") + "'"
