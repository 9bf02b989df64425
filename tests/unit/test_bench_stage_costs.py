"""bench.stage_costs' fraud-detector row does what the detectors' operator does per fact (timing is not checked)."""

from __future__ import annotations

from typing import Any

from bench.stage_costs import detectors_row
from jobs.fraud_operator import FACT_FIELDS


def claim(key: str, npi: str, member: str) -> tuple[Any, ...]:
    """A claim's fact row, as the JVM projects it from the accepted row (FACT_FIELDS)."""
    columns = {"member_token": member, "record_type": "claim", "business_key": key, "feed": "feed_a",
               "ingested_at_ms": 1_000, "billing_npi": npi, "frequency_code": "1", "service_date_from": "2025-05-01",
               "service_lines": [["1", "99213", "", "1", "100.00", "2025-05-01"]]}
    return tuple(columns.get(f) for f in FACT_FIELDS)


def test_the_detectors_row_keeps_each_members_state_between_facts_as_the_operator_does() -> None:
    # Four billing providers for one member on one day: the shipped rule (more than 3) fires once, which it can
    # only do if the row carries the member's pieces from fact to fact through their pickled bytes.
    many = [claim(f"k{n}", f"100000000{n}", "tok-a") for n in range(4)]
    others = [claim(f"j{n}", f"100000000{n}", f"tok-{n}") for n in range(4)]
    row = detectors_row("synthetic", [*many, *others])
    assert len(row.ns) == 8
    assert row.extra == {"signals": 1, "members": 5}
