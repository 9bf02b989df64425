"""The schema check's fast yes (schemas.fast_accepts) agrees with fastjsonschema, record by record.

The stage trusts a True from fast_accepts without asking fastjsonschema, so a True on a record
fastjsonschema refuses would let an invalid record through. These tests run both on generated
records of every type, standardized as the stage sees them, and on seeded mutations of them that
reach every kind of keyword (missing and unknown keys, wrong types, strings just off a pattern,
lists too long or empty), and demand the same verdict.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from fastjsonschema import JsonSchemaValueException

from schemas import RECORD_TYPES, Unsupported, _never, compile_accepts, fast_accepts, fast_validator
from tests.unit.feed_samples import decoded_records, mutate
from udfs.dead_letters import Rejected
from udfs.hygiene import clean
from udfs.standardize import standardize

SEED = 19


def _passes(record_type: str, record: Any) -> bool:
    try:
        fast_validator(record_type)(copy.deepcopy(record))
    except JsonSchemaValueException:
        return False
    return True


def _records(record_type: str, n: int) -> list[dict[str, Any]]:
    """Generated records of one type (valid and invalid kinds), hygiene-cleaned and standardized where they can be."""
    out = []
    for record in decoded_records(record_type, n, SEED):
        try:
            record = standardize(clean(record, record_type), record_type)
        except Rejected:
            pass
        out.append(record)
    return out


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_every_shipped_schema_compiles(record_type: str) -> None:
    assert fast_accepts(record_type) is not _never


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_same_verdict_on_generated_and_mutated_records(record_type: str) -> None:
    accepts = fast_accepts(record_type)
    rng = random.Random(f"{SEED}:{record_type}")
    records = _records(record_type, 60)
    checked = disagreements = accepted = 0
    for record in records:
        for candidate in (record, *(mutate(record, rng) for _ in range(25))):
            verdict = _passes(record_type, candidate)
            checked += 1
            accepted += verdict
            disagreements += accepts(candidate) != verdict
    assert disagreements == 0
    assert 0 < accepted < checked  # both verdicts were exercised


def test_an_unknown_keyword_is_refused_at_compile_time() -> None:
    with pytest.raises(Unsupported):
        compile_accepts({"type": "string", "default": "x"}, {})  # fastjsonschema would write the default in
    with pytest.raises(Unsupported):
        compile_accepts({"$ref": "#/$defs/a", "type": "string", "$defs": {"a": {}}}, {})
