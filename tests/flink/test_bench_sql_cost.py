"""bench.sql_cost prices alternatives of one value: each gives the column's bytes, or it stops (timing not checked)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.flink


def test_the_partner_value_built_in_sql_is_the_columns_value_and_both_are_priced(
        flink_process_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.sql_cost as sql_cost

    run = sql_cost.measure(4, records=30, copies=2, rounds=1)
    assert run["rows_differing"] == {name: 0 for name in sql_cost.EXPRESSIONS}
    assert set(run["over_the_column_us"]) == set(sql_cost.EXPRESSIONS)
    assert run["bytes_per_row"]["partner_curated"] > run["bytes_per_row"]["curated"] + run["bytes_per_row"]["sealed"]

    # A candidate that is not the same value is refused before anything is timed.
    monkeypatch.setitem(sql_cost.EXPRESSIONS, "curated alone", "curated")
    with pytest.raises(SystemExit, match="curated alone"):
        sql_cost.measure(4, records=30, copies=2, rounds=1)
