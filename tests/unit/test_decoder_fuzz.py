"""Every decoder, fuzzed alone and through the whole stage: any bytes in, items or reasons out, no value in a reason.

Units are each shipped feed's valid unit (its own format: JSON, JSON Lines, CSV, Avro container and
single object, X12 837P/837I/835/834) with a marker string inserted or overwritten at a random byte
offset, or arbitrary bytes. The promise checked for each decoder on its own and for IngestStage:
- no exception but Rejected leaves a decoder, and none at all leaves the stage;
- every item is a record (a dict) or an error with a defined reason code, never both or neither;
- the marker, which only the input holds, appears in no reason detail and no position.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.local.reference import reference_data
from infra.local.static_keys import static_protectors
from schemas.contracts import load_contracts
from tests.unit import feed_samples
from udfs.dead_letters import Rejected
from udfs.ingest import IngestStage, Refused, _decoder
from udfs.reasons import REASONS

SEED = 41
NOW = datetime(2026, 11, 22, tzinfo=UTC)
CONTRACTS = load_contracts()
STAGE = IngestStage(CONTRACTS, static_protectors(), reference_data(SEED))
FEEDS = sorted(CONTRACTS)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MARKER = st.text("bcdfghjkmnpqrstvwxz", min_size=9, max_size=14).map(lambda s: "Zq" + s)


UNITS = {feed: feed_samples.valid_unit(CONTRACTS[feed], 3, SEED) for feed in FEEDS}


def _marked(feed: str, where: float, marker: str, overwrite: bool) -> bytes:
    unit = UNITS[feed]
    at = int(len(unit) * where)
    mark = marker.encode()
    return unit[:at] + mark + unit[at + (len(mark) if overwrite else 0):]


def _decoded(feed: str, payload: bytes) -> tuple[list[Any], Rejected | None]:
    contract = CONTRACTS[feed]
    items: list[Any] = []
    try:
        for item in _decoder(contract.format)(payload, contract.decoder_options):
            items.append(item)
    except Rejected as err:  # the only exception a decoder may raise on bad input
        return items, err
    return items, None


def _assert_clean(texts: list[str], marker: str) -> None:
    for text in texts:
        assert marker not in text and marker.lower() not in text.lower()


@pytest.mark.parametrize("feed", FEEDS)
@FUZZ
@given(where=st.floats(0.0, 1.0), marker=MARKER, overwrite=st.booleans())
def test_each_decoder_yields_items_or_reasons_and_never_repeats_input(feed: str, where: float, marker: str,
                                                                       overwrite: bool) -> None:
    items, unit_error = _decoded(feed, _marked(feed, where, marker, overwrite))
    shown: list[str] = []
    for item in items:
        assert (item.record is None) != (item.error is None)
        assert item.record is None or isinstance(item.record, dict)
        if item.error is not None:
            assert item.error.reason_code in REASONS
            shown.append(item.error.detail)
        shown.append(item.position)
    if unit_error is not None:
        assert unit_error.reason_code in REASONS
        shown.append(unit_error.detail)
    _assert_clean(shown, marker)


@pytest.mark.parametrize("feed", FEEDS)
@FUZZ
@given(where=st.floats(0.0, 1.0), marker=MARKER, overwrite=st.booleans())
def test_the_stage_never_raises_and_its_refusals_never_repeat_input(feed: str, where: float, marker: str,
                                                                     overwrite: bool) -> None:
    unit = _marked(feed, where, marker, overwrite)
    outcomes = list(STAGE.process(unit, feed_samples.source(CONTRACTS[feed]), 1_750_000_000_000, NOW))
    assert outcomes
    for outcome in outcomes:
        if isinstance(outcome, Refused):
            assert outcome.error.reason_code in REASONS
            _assert_clean([outcome.error.detail, outcome.position or "", outcome.record_id or ""], marker)


@pytest.mark.parametrize("feed", FEEDS)
@FUZZ
@given(data=st.binary(max_size=1024))
def test_each_decoder_takes_arbitrary_bytes(feed: str, data: bytes) -> None:
    items, unit_error = _decoded(feed, data)
    assert all((i.record is None) != (i.error is None) for i in items)
    assert unit_error is None or unit_error.reason_code in REASONS
    assert orjson.dumps([i.record for i in items if i.record is not None])  # records are JSON values
