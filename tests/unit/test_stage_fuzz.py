"""Fuzzing the whole ingest stage, per shipped feed contract: any bytes in, outcomes out, never a crash.

Every decoder has its own fuzz tests; this one drives them through IngestStage.process as the job
does, with arbitrary bytes and with valid units broken at random, and checks the stage's promise:
no exception escapes, and every refusal carries a defined reason code and a PHI-free position.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.local.reference import reference_data
from infra.local.static_keys import static_protectors
from schemas import validator
from schemas.contracts import load_contracts
from tests.unit import feed_samples
from udfs.ingest import Accepted, IngestStage, Refused
from udfs.reasons import REASONS

SEED = 17
NOW = datetime(2026, 11, 22, tzinfo=UTC)
CONTRACTS = load_contracts()


PROTECTORS = static_protectors()


def _stage() -> IngestStage:
    return IngestStage(CONTRACTS, PROTECTORS, reference_data(SEED))


STAGE = _stage()


VALID_UNITS = {feed: feed_samples.valid_unit(contract, 6, SEED) for feed, contract in CONTRACTS.items()}


def _check(feed: str, payload: bytes) -> list[Accepted | Refused]:
    outcomes = list(STAGE.process(payload, feed_samples.source(CONTRACTS[feed]), 1_750_000_000_000, NOW))
    assert outcomes, "every unit yields at least one outcome (a refusal if nothing else)"
    for outcome in outcomes:
        if isinstance(outcome, Refused):
            assert outcome.error.reason_code in REASONS
            assert outcome.error.reason_code != "internal_error", outcome.error.detail
        else:  # an accepted record is a valid canonical record, as sealed for the archive
            contract = CONTRACTS[feed]
            kept = PROTECTORS[contract.phi_policy].open_record(outcome.sealed, feed, outcome.record_id)
            assert not list(validator(contract.record_type).iter_errors(kept))
    return outcomes


@pytest.mark.parametrize("feed", sorted(CONTRACTS))
def test_a_valid_unit_of_each_feed_is_accepted(feed: str) -> None:
    outcomes = _check(feed, VALID_UNITS[feed])
    assert all(isinstance(o, Accepted) for o in outcomes), [o.error for o in outcomes if isinstance(o, Refused)]


@pytest.mark.parametrize("feed", sorted(CONTRACTS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_are_refused_with_a_reason(feed: str, data: bytes) -> None:
    _check(feed, data)


@pytest.mark.parametrize("feed", sorted(CONTRACTS))
@settings(max_examples=40, deadline=None)
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=4))
def test_broken_valid_units_never_crash_the_stage(feed: str, cut: float, flips: list[tuple[float, int]]) -> None:
    unit = bytearray(VALID_UNITS[feed][: max(1, int(len(VALID_UNITS[feed]) * cut))])
    for where, value in flips:
        unit[min(len(unit) - 1, int(len(unit) * where))] = value
    _check(feed, bytes(unit))
