"""bench.stage_costs' fraud-detector row does what the detectors' operator does per fact (timing is not checked)."""

from __future__ import annotations

from bench.stage_costs import detectors_row
from tests.unit.test_fraud import claim


def test_the_detectors_row_keeps_each_members_state_between_facts_as_the_operator_does() -> None:
    # Four billing providers for one member on one day: the shipped rule (more than 3) fires once, which it can
    # only do if the row carries the member's pieces from fact to fact through their pickled bytes.
    many = [claim(f"k{n}", npi=f"100000000{n}", member="tok-a") for n in range(4)]
    others = [claim(f"j{n}", npi=f"100000000{n}", member=f"tok-{n}") for n in range(4)]
    row = detectors_row("synthetic", [*many, *others])
    assert len(row.ns) == 8
    assert row.extra == {"signals": 1, "members": 5}
