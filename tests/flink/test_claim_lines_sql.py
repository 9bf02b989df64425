"""The claim_lines columns, from a claim row's line texts, equal what the JSON route they replace gave (decision 0022).

Lines used to cross to the JVM as one JSON array per claim, unnested with JSON_QUERY and read field by
field with JSON_VALUE; they now cross as texts (udfs.projections.json_value_text). Both SQL routes run
here over the same lines: generated claims' lines and lines holding the values the schema lets through
only in odd forms (2.0 for an integer, an empty modifier list) or not at all (a fraction, a boolean,
a list, NaN), which the texts must still render as JSON_VALUE did.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from infra.local import synthetic
from infra.local.synthetic import Feed
from udfs.iceberg_columns import ICEBERG_COLUMNS
from udfs.projections import claim_columns, claim_line_texts

pytestmark = pytest.mark.flink

# The route being replaced, as it stood: the fields the JSON array carried and the expressions over it.
OLD_FIELDS = ("line_number", "procedure_code", "revenue_code", "modifiers", "units", "charge", "service_date")
OLD_EXPRESSIONS = {
    "line_number": "CAST(JSON_VALUE(line, '$.line_number') AS INT)",
    "procedure_code": "JSON_VALUE(line, '$.procedure_code')", "modifiers": "JSON_VALUE(line, '$.modifiers')",
    "units": "CAST(JSON_VALUE(line, '$.units') AS DECIMAL(12, 3))",
    "charge": "CAST(JSON_VALUE(line, '$.charge') AS DECIMAL(14, 2))",
    "service_date": "CAST(JSON_VALUE(line, '$.service_date') AS DATE)",
}


def old_service_lines(claim: dict[str, Any]) -> str:
    """The `service_lines` column as udfs.projections.claim_columns built it before (a JSON array)."""
    return orjson.dumps([{f: (",".join(line[f]) if f == "modifiers" else line.get(f)) for f in OLD_FIELDS}
                         for line in claim["service_lines"]]).decode()


def odd_lines() -> list[dict[str, Any]]:
    """Lines with values in the forms JSON_VALUE renders in its own way."""
    base = {"line_number": 1, "procedure_code": "99213", "modifiers": ["25", "59"], "units": 1, "charge": "12.50",
            "service_date": "2026-11-02", "diagnosis_pointers": [1]}
    return [
        {**base, "line_number": 2.0, "units": 3.0},  # integers as JSON numbers with a fraction part
        {**base, "units": 1.5, "modifiers": []},  # a fraction; no modifiers: an empty text, not NULL
        {**base, "units": 1e-7, "procedure_code": None},  # a small fraction (scientific form); null
        {**base, "units": math.nan, "procedure_code": True},  # NaN is written as null; a boolean
        {**base, "procedure_code": ["99213"], "service_date": None},  # an array: NULL
        {**base, "procedure_code": {"code": "99213"}, "units": 12345678},  # an object: NULL; a large integer
        {**base, "procedure_code": "  é ", "units": 9999.0},  # text kept as it is
        {**base, "procedure_code": 1e16}, {**base, "procedure_code": 2.0},  # numbers where texts are kept uncast
    ]


def test_line_texts_give_the_columns_the_json_route_gave(flink_process_env: None) -> None:
    from pyflink.common import Row
    from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment

    generated = synthetic.generate(40, seed=7, feeds=(Feed("lines", "claim", "kafka"),),
                                   mix=synthetic.Mix(1.0, 0.0, 0.0), duplicate_rate=0.0, invalid_rate=0.0)
    claims = [orjson.loads(g.payload) for g in generated]
    claims.append({"service_lines": odd_lines()})
    rows = [Row(str(i), old_service_lines(claim), claim_columns(claim)["service_lines"] if "claim_id" in claim
                else [claim_line_texts(line) for line in claim["service_lines"]])
            for i, claim in enumerate(claims)]
    assert sum(len(r[2]) for r in rows) > 100

    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.create_temporary_view("claims", t_env.from_elements(rows, DataTypes.ROW([
        DataTypes.FIELD("record_id", DataTypes.STRING()), DataTypes.FIELD("old_lines", DataTypes.STRING()),
        DataTypes.FIELD("service_lines", DataTypes.ARRAY(DataTypes.ARRAY(DataTypes.STRING())))])))
    fields = list(OLD_EXPRESSIONS)
    new = ICEBERG_COLUMNS["claim_lines"]
    # Expressions from this module and udfs/iceberg_columns.py only: no outside text reaches the SQL.
    old_sql = (f"SELECT record_id, {', '.join(OLD_EXPRESSIONS[f] for f in fields)} FROM claims "  # noqa: S608
               "CROSS JOIN UNNEST(JSON_QUERY(old_lines, '$' RETURNING ARRAY<STRING>)) AS l(line)")
    new_sql = (f"SELECT record_id, {', '.join(new[f] for f in fields)} FROM claims "  # noqa: S608
               "CROSS JOIN UNNEST(service_lines) AS l(line)")
    with t_env.execute_sql(old_sql).collect() as result:
        old = sorted(tuple(map(repr, row)) for row in result)
    with t_env.execute_sql(new_sql).collect() as result:
        now = sorted(tuple(map(repr, row)) for row in result)
    assert len(old) == sum(len(r[2]) for r in rows)
    assert now == old

