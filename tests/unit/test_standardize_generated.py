"""The generated standardize walk (udfs.standardize.standardize) does what the spec's closures do, record by record.

standardize runs code generated from canonical_fields.SPECS with fast paths for values already in
canonical form; standardize_reference interprets the same specs closure by closure, as the stage
did before. Both must return equal records, or raise the same reason code with the same detail
(every failing path, in the same order), for every shipped feed's options, on generated records of
every type (invalid kinds included) and on seeded mutations of them.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from schemas.contracts import load_contracts
from tests.unit.feed_samples import decoded_records, mutate
from udfs.dead_letters import Rejected
from udfs.hygiene import clean
from udfs.standardize import StandardizeOptions, standardize, standardize_reference

SEED = 23
RECORD_TYPES = ("claim", "payment", "eligibility")
OPTIONS = sorted({StandardizeOptions.from_contract(c.standardize) for c in load_contracts().values()}, key=repr)


def _outcome(fn: Any, record: Any, record_type: str, options: StandardizeOptions) -> tuple[Any, ...]:
    before = copy.deepcopy(record)
    try:
        result: tuple[Any, ...] = ("ok", fn(record, record_type, options))
    except Rejected as err:
        result = ("refused", err.reason_code, err.detail)
    assert record == before  # neither mutates its input
    return result


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_generated_walk_matches_the_reference(record_type: str) -> None:
    rng = random.Random(f"{SEED}:{record_type}")
    compared = refused = 0
    for record in decoded_records(record_type, 50, SEED):
        try:
            record = clean(record, record_type)
        except Rejected:
            pass
        for candidate in (record, *(mutate(record, rng) for _ in range(20))):
            for options in OPTIONS:
                new = _outcome(standardize, candidate, record_type, options)
                assert new == _outcome(standardize_reference, candidate, record_type, options)
                compared += 1
                refused += new[0] == "refused"
    assert 0 < refused < compared  # both outcomes were exercised


def test_options_in_use_are_more_than_the_default() -> None:
    assert len(OPTIONS) > 1  # date formats, time zones or phone regions of the shipped feeds differ
