"""Enrichment: lookups by record type, versions only move forward, misses follow the feed's policy."""

from __future__ import annotations

import orjson
import pytest

from infra.local import synthetic
from infra.local.reference import reference_data, reference_documents, unknown_payer
from udfs.dead_letters import Rejected
from udfs.enrich import ReferenceData, enrich, parse_reference

SEED = 3


def reference(version: int = 1) -> ReferenceData:
    return reference_data(SEED, version)


def records_of(record_type: str) -> list[dict]:
    return [orjson.loads(g.payload) for g in synthetic.generate(400, seed=SEED, invalid_rate=0.0, duplicate_rate=0.0)
            if g.record_type == record_type]


def test_claims_get_payer_and_provider_and_name_the_versions_used() -> None:
    claim = next(c for c in records_of("claim") if c["payer"]["payer_id"] != unknown_payer(SEED))
    result = enrich(claim, "claim", reference(), "flag")
    assert result.misses == ()
    assert set(result.values) == {"payer", "billing_provider"}
    assert result.values["billing_provider"]["taxonomy"]
    assert result.versions == {"payer_directory": 1, "providers": 1}


def test_eligibility_gets_its_plan() -> None:
    record = records_of("eligibility")[0]
    assert enrich(record, "eligibility", reference(), "dead_letter").values["plan"]["line_of_business"]


def test_a_miss_is_flagged_or_dead_lettered_by_policy() -> None:
    claim = next(c for c in records_of("claim") if c["payer"]["payer_id"] == unknown_payer(SEED))
    flagged = enrich(claim, "claim", reference(), "flag")
    assert flagged.misses == ("payer_directory:payer.payer_id",)
    with pytest.raises(Rejected) as err:
        enrich(claim, "claim", reference(), "dead_letter")
    assert err.value.reason_code == "enrichment_miss"
    assert claim["payer"]["payer_id"] not in str(err.value)


def test_a_newer_version_refreshes_and_an_older_one_is_ignored() -> None:
    claim = next(c for c in records_of("claim") if c["payer"]["payer_id"] == unknown_payer(SEED))
    data = reference(1)
    assert data.update(parse_reference(orjson.dumps(reference_documents(SEED, 2, all_payers=True)["payer_directory"])))
    assert enrich(claim, "claim", data, "dead_letter").versions["payer_directory"] == 2
    assert not data.update(parse_reference(orjson.dumps(reference_documents(SEED, 1)["payer_directory"])))
    assert data.versions()["payer_directory"] == 2


def test_no_reference_loaded_is_a_miss_for_every_lookup() -> None:
    claim = records_of("claim")[0]
    assert len(enrich(claim, "claim", ReferenceData(), "flag").misses) == 2


@pytest.mark.parametrize("document", [
    b"not json", b"[]", b'{"dataset": "other", "version": 1, "entries": {}}',
    b'{"dataset": "plan_codes", "version": 0, "entries": {}}',
    b'{"dataset": "plan_codes", "version": true, "entries": {}}',
    b'{"dataset": "plan_codes", "version": 1, "entries": {"A": 1}}',
])
def test_bad_reference_documents_are_refused(document: bytes) -> None:
    with pytest.raises(ValueError):
        parse_reference(document)
