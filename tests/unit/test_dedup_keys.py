"""Dedup keys: exact re-sends collide, corrections and content changes do not, and no key is readable."""

from __future__ import annotations

import copy

import orjson
import pytest

from infra.local import synthetic
from infra.local.static_keys import static_token_keys
from udfs.dedup import business_key_text
from udfs.dedup import dedup_keys as keyed_dedup_keys
from udfs.phi.tokens import Tokenizer, TokenKeys

LINKAGE = Tokenizer(static_token_keys()).linkage


def dedup_keys(record: dict, record_type: str):  # type: ignore[no-untyped-def]
    return keyed_dedup_keys(record, record_type, LINKAGE)


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    out: dict[str, dict] = {}
    for g in synthetic.generate(60, seed=5, invalid_rate=0.0, duplicate_rate=0.0):
        out.setdefault(g.record_type, orjson.loads(g.payload))
    return out


@pytest.mark.parametrize("record_type", ["claim", "payment", "eligibility"])
def test_a_resend_under_a_new_id_and_time_is_the_same_record(records: dict[str, dict], record_type: str) -> None:
    original = records[record_type]
    resend = copy.deepcopy(original) | {"record_id": "01J0000000000000000000000Z", "sent_at": "2030-01-01T00:00:00Z",
                                          "feed": "another_feed"}
    assert dedup_keys(resend, record_type) == dedup_keys(original, record_type)


@pytest.mark.parametrize("record_type", ["claim", "payment", "eligibility"])
def test_changed_content_is_a_new_version_of_the_same_business_key(records: dict[str, dict], record_type: str) -> None:
    original = records[record_type]
    changed = copy.deepcopy(original) | {"notes": ["corrected address"]}
    a, b = dedup_keys(original, record_type), dedup_keys(changed, record_type)
    assert a.business_key == b.business_key
    assert a.dedup_key != b.dedup_key


@pytest.mark.parametrize("code", ["7", "8"])
def test_corrections_and_voids_link_to_the_original(records: dict[str, dict], code: str) -> None:
    original = records["claim"] | {"frequency_code": "1"}
    correction = copy.deepcopy(original) | {"frequency_code": code}
    keys = dedup_keys(correction, "claim")
    assert keys.business_key != dedup_keys(original, "claim").business_key
    assert keys.original_key == dedup_keys(original, "claim").business_key
    assert dedup_keys(original, "claim").original_key is None


def test_keys_are_digests_that_hold_no_identifier(records: dict[str, dict]) -> None:
    record = records["eligibility"]
    keys = dedup_keys(record, "eligibility")
    member_id = record["member"]["member_id"]
    assert member_id in business_key_text(record, "eligibility")
    for key in (keys.business_key, keys.content_hash, keys.dedup_key):
        assert member_id not in key and all(c in "0123456789abcdef" for c in key)
    assert len(keys.dedup_key) == 64


def test_keys_depend_on_the_linkage_key_so_nobody_without_it_can_test_a_guess(records: dict[str, dict]) -> None:
    record = records["claim"]
    other = Tokenizer(TokenKeys(1, {1: b"k" * 32}, b"another linkage key, 32 bytes..")).linkage
    assert keyed_dedup_keys(record, "claim", other).business_key != dedup_keys(record, "claim").business_key
