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

import orjson
import pytest
from fastjsonschema import JsonSchemaValueException

from infra.local import synthetic
from schemas import RECORD_TYPES, Unsupported, _never, compile_accepts, fast_accepts, fast_validator
from udfs.dead_letters import Rejected
from udfs.hygiene import clean
from udfs.standardize import standardize

SEED = 19
ODD_VALUES: tuple[Any, ...] = (None, True, 0, 1, -1, 1.0, 1.5, "", " ", "x" * 90, [], {}, ["A1"], {"a": 1},
                               "2024-02-30", "2024-13-01", "12.345", "+1", "AB\n", "1234\n", "99")


def _passes(record_type: str, record: Any) -> bool:
    try:
        fast_validator(record_type)(copy.deepcopy(record))
    except JsonSchemaValueException:
        return False
    return True


def _records(record_type: str, n: int) -> list[dict[str, Any]]:
    """Generated records of one type (valid and invalid kinds), hygiene-cleaned and standardized where they can be."""
    mix = synthetic.Mix(**{t: float(t == record_type) for t in RECORD_TYPES})
    out = []
    for g in synthetic.generate(n, seed=SEED, mix=mix, invalid_rate=0.3, duplicate_rate=0.0, size_kb=(1, 6)):
        try:
            record = orjson.loads(g.payload)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        try:
            record = standardize(clean(record, record_type), record_type)
        except Rejected:
            pass
        out.append(record)
    return out


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, sub in value.items():
            found += _paths(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            found += _paths(sub, (*path, i))
    return found


def _mutate(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    out = copy.deepcopy(record)
    path = rng.choice(_paths(out)[1:])
    parent = out
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    value = parent[last]
    move = rng.randrange(7)
    if move == 0 and isinstance(parent, dict):
        del parent[last]
    elif move == 1 and isinstance(value, dict):
        value["unknown_field"] = "x"
    elif move == 2 and isinstance(value, list):
        value.extend(value[:1] * 60 if value else [])
    elif move == 3 and isinstance(value, list):
        value.clear()
    elif move == 4 and isinstance(value, str):
        parent[last] = rng.choice((value + "\n", value + "X", value[:-1], value.lower(), " " + value, value * 3))
    else:
        parent[last] = rng.choice(ODD_VALUES)
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
        for candidate in (record, *(_mutate(record, rng) for _ in range(25))):
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
