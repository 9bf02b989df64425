"""A partner's request body from the protected record: field mapping, list paths, and the reveal exception.

Synthetic records only: "tok_" strings stand for tokens, "enc:" strings for ciphertexts, and the
opened (canonical) values are made up.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from schemas.partner_contract import PayloadMapping, load_granted_partner_contracts
from schemas.phi_access import load_access
from udfs.partner_body import BodyError, build_body

ENVELOPE = {"record_id": "rec-0001", "business_key": "claim:TEST-0001", "record_type": "claim", "feed": "test_feed"}


def protected_claim() -> dict[str, Any]:
    """A claim as the ingest job writes it: identifiers tokenised, birth dates encrypted."""
    return {
        "claim_id": "tok_claim_7f3a",
        "payer": {"payer_id": "PAYER-T1", "name": "Test Payer"},
        "billing_provider": {"npi": "1234567893", "name": "Test Clinic"},
        "subscriber": {"member_id": "tok_mem_19c2", "first_name": "tok_fn_a1", "birth_date": "enc:v1:sub-dob"},
        "patient": {"member_id": "tok_mem_19c2", "first_name": "tok_fn_b2", "birth_date": "enc:v1:pat-dob"},
        "service_lines": [
            {"line_number": 1, "procedure_code": "99213", "charge": "120.00", "units": 1},
            {"line_number": 2, "procedure_code": "85025", "charge": "30.00", "units": 1},
        ],
        "total_charge": "150.00",
        "service_date_from": "2024-03-04",
    }


def opened_claim() -> dict[str, Any]:
    """The same claim's canonical values (what the sealed copy opens to)."""
    return {
        "claim_id": "TEST-CLAIM-0001",
        "payer": {"payer_id": "PAYER-T1", "name": "Test Payer"},
        "billing_provider": {"npi": "1234567893", "name": "Test Clinic"},
        "subscriber": {"member_id": "TESTMEM0001", "first_name": "Alpha", "birth_date": "1970-01-01"},
        "patient": {"member_id": "TESTMEM0001", "first_name": "Beta", "birth_date": "1999-12-31"},
        "service_lines": [
            {"line_number": 1, "procedure_code": "99213", "charge": "120.00", "units": 1},
            {"line_number": 2, "procedure_code": "85025", "charge": "30.00", "units": 1},
        ],
        "total_charge": "150.00",
        "service_date_from": "2024-03-04",
    }


def protected_payment() -> dict[str, Any]:
    return {
        "trace_number": "TRACE-T1",
        "payment_amount": "80.00",
        "claims": [
            {"claim_id": "tok_claim_01", "paid": "50.00",
             "patient": {"member_id": "tok_mem_01", "first_name": "tok_fn_01", "last_name": "tok_ln_01"}},
            {"claim_id": "tok_claim_02", "paid": "30.00",
             "patient": {"member_id": "tok_mem_02", "first_name": "tok_fn_02", "last_name": "tok_ln_02"}},
        ],
    }


def opened_payment() -> dict[str, Any]:
    return {
        "trace_number": "TRACE-T1",
        "payment_amount": "80.00",
        "claims": [
            {"claim_id": "TEST-CLAIM-01", "paid": "50.00",
             "patient": {"member_id": "TESTMEM01", "first_name": "Gamma", "last_name": "Test"}},
            {"claim_id": "TEST-CLAIM-02", "paid": "30.00",
             "patient": {"member_id": "TESTMEM02", "first_name": "Delta", "last_name": "Test"}},
        ],
    }


def test_envelope_fields_come_from_the_envelope() -> None:
    mapping = PayloadMapping({"record_id": "$record_id", "business_key": "$business_key", "id": "claim_id"})
    body = build_body(mapping, ENVELOPE, protected_claim(), None)
    assert body == {"record_id": "rec-0001", "business_key": "claim:TEST-0001", "id": "tok_claim_7f3a"}


def test_nested_path_picks_the_leaf() -> None:
    mapping = PayloadMapping({"billing_provider": "billing_provider.npi", "payer_name": "payer.name"})
    assert build_body(mapping, ENVELOPE, protected_claim(), None) == {
        "billing_provider": "1234567893", "payer_name": "Test Payer"}


def test_a_whole_subtree_is_copied() -> None:
    mapping = PayloadMapping({"lines": "service_lines", "payer": "payer"})
    body = build_body(mapping, ENVELOPE, protected_claim(), None)
    assert body["lines"] == protected_claim()["service_lines"]
    assert body["payer"] == {"payer_id": "PAYER-T1", "name": "Test Payer"}


def test_list_paths_map_over_the_elements() -> None:
    mapping = PayloadMapping({"claim_ids": "claims[].claim_id", "member_ids": "claims[].patient.member_id",
                              "procedures": "service_lines[].procedure_code"})
    payment = protected_payment()
    assert build_body(mapping, ENVELOPE, payment, None) == {
        "claim_ids": ["tok_claim_01", "tok_claim_02"], "member_ids": ["tok_mem_01", "tok_mem_02"]}
    assert build_body(mapping, ENVELOPE, protected_claim(), None) == {"procedures": ["99213", "85025"]}
    # An element without the leaf keeps its position (as null), so lists stay aligned with each other.
    del payment["claims"][0]["claim_id"]
    assert build_body(mapping, ENVELOPE, payment, None)["claim_ids"] == [None, "tok_claim_02"]


def test_absent_optional_fields_are_left_out_not_null() -> None:
    mapping = PayloadMapping({
        "record_id": "$record_id",
        "original_key": "$original_key",  # not in the envelope
        "rendering_npi": "rendering_provider.npi",  # no rendering provider at all
        "address": "patient.address.line2",  # the parent exists, the leaf does not
        "notes": "notes",  # a top-level field that is absent
        "service_date_to": "service_date_to",  # present but null
        "claim_ids": "claims[].claim_id",  # a list that is absent
    })
    protected = protected_claim() | {"service_date_to": None}
    body = build_body(mapping, ENVELOPE, protected, None)
    assert body == {"record_id": "rec-0001"}


def test_reveal_replaces_only_the_revealed_leaves() -> None:
    mapping = PayloadMapping(
        {"claim_id": "claim_id", "member_id": "subscriber.member_id", "subscriber": "subscriber",
         "dob": "patient.birth_date", "patient_first": "patient.first_name", "lines": "service_lines"},
        reveal=("subscriber.member_id", "patient.birth_date"),
    )
    body = build_body(mapping, ENVELOPE, protected_claim(), opened_claim())
    assert body["member_id"] == "TESTMEM0001"
    assert body["dob"] == "1999-12-31"
    # Everything else stays as protected: tokens and ciphertexts, even beside a revealed leaf.
    assert body["claim_id"] == "tok_claim_7f3a"
    assert body["patient_first"] == "tok_fn_b2"
    assert body["subscriber"] == {"member_id": "TESTMEM0001", "first_name": "tok_fn_a1",
                                  "birth_date": "enc:v1:sub-dob"}
    assert body["lines"] == protected_claim()["service_lines"]


def test_reveal_of_a_leaf_inside_a_list() -> None:
    mapping = PayloadMapping({"claims": "claims", "member_ids": "claims[].patient.member_id"},
                             reveal=("claims[].patient.member_id",))
    body = build_body(mapping, ENVELOPE, protected_payment(), opened_payment())
    assert body["member_ids"] == ["TESTMEM01", "TESTMEM02"]
    assert body["claims"] == [
        {"claim_id": "tok_claim_01", "paid": "50.00",
         "patient": {"member_id": "TESTMEM01", "first_name": "tok_fn_01", "last_name": "tok_ln_01"}},
        {"claim_id": "tok_claim_02", "paid": "30.00",
         "patient": {"member_id": "TESTMEM02", "first_name": "tok_fn_02", "last_name": "tok_ln_02"}},
    ]


def test_a_revealed_leaf_absent_from_the_canonical_record_is_removed() -> None:
    opened = opened_claim()
    del opened["patient"]["birth_date"]
    mapping = PayloadMapping({"dob": "patient.birth_date", "patient": "patient", "member_id": "subscriber.member_id"},
                             reveal=("patient.birth_date", "subscriber.member_id"))
    body = build_body(mapping, ENVELOPE, protected_claim(), opened)
    assert "dob" not in body, "the ciphertext must not go out in place of a missing canonical value"
    assert body["patient"] == {"member_id": "tok_mem_19c2", "first_name": "tok_fn_b2"}
    assert body["member_id"] == "TESTMEM0001"


def test_a_revealed_list_leaf_absent_from_one_canonical_element_is_removed_there_only() -> None:
    opened = opened_payment()
    del opened["claims"][1]["patient"]["member_id"]
    mapping = PayloadMapping({"claims": "claims"}, reveal=("claims[].patient.member_id",))
    claims = build_body(mapping, ENVELOPE, protected_payment(), opened)["claims"]
    assert claims[0]["patient"] == {"member_id": "TESTMEM01", "first_name": "tok_fn_01", "last_name": "tok_ln_01"}
    assert claims[1]["patient"] == {"first_name": "tok_fn_02", "last_name": "tok_ln_02"}
    assert [c["claim_id"] for c in claims] == ["tok_claim_01", "tok_claim_02"]


def test_the_protected_and_opened_records_are_not_mutated() -> None:
    protected, opened = protected_payment(), opened_payment()
    before_protected, before_opened = copy.deepcopy(protected), copy.deepcopy(opened)
    mapping = PayloadMapping({"claims": "claims", "trace": "trace_number"}, reveal=("claims[].patient.member_id",))
    body = build_body(mapping, ENVELOPE, protected, opened)
    assert protected == before_protected and opened == before_opened
    body["claims"][0]["patient"]["member_id"] = "changed"  # the body shares nothing with the inputs
    assert protected == before_protected and opened == before_opened


def test_reveal_without_an_opened_record_is_refused() -> None:
    mapping = PayloadMapping({"member_id": "subscriber.member_id"}, reveal=("subscriber.member_id",))
    with pytest.raises(ValueError, match="opened record"):
        build_body(mapping, ENVELOPE, protected_claim(), None)
    # Without reveal no opened record is needed.
    assert build_body(PayloadMapping({"member_id": "subscriber.member_id"}), ENVELOPE, protected_claim(), None) == {
        "member_id": "tok_mem_19c2"}


def test_the_shipped_clearwater_claim_mapping() -> None:
    contracts = load_granted_partner_contracts(load_access())
    mapping = contracts["clearwater_health"].payload["claim"]
    body = build_body(mapping, ENVELOPE, protected_claim(), opened_claim())
    assert body["member_id"] == "TESTMEM0001"  # revealed: from the opened record
    assert body["patient_birth_date"] == "1999-12-31"  # revealed: from the opened record
    assert body["claim_id"] == "tok_claim_7f3a"  # not revealed: the token stays
    assert body["record_id"] == "rec-0001" and body["business_key"] == "claim:TEST-0001"
    assert body["billing_provider"] == "1234567893"
    assert body["service_lines"] == protected_claim()["service_lines"]
    # Nothing else of the opened record leaks: no canonical value other than the two revealed ones.
    leaked = {"TEST-CLAIM-0001", "Alpha", "Beta", "1970-01-01"}
    assert not leaked & set(_strings(body))


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def test_a_missing_parent_in_the_opened_record_removes_only_the_revealed_leaf() -> None:
    mapping = PayloadMapping({"claims": "claims"}, ("claims[].patient.member_id",))
    protected = {"claims": [{"claim_id": "tok_c1", "patient": {"member_id": "tok_m1", "first_name": "tok_f1"}}]}
    body = build_body(mapping, ENVELOPE, protected, {"claims": [{"claim_id": "C-1"}]})
    assert body == {"claims": [{"claim_id": "tok_c1", "patient": {"first_name": "tok_f1"}}]}


def test_a_reveal_inside_a_list_protected_as_one_value_refuses_the_record() -> None:
    mapping = PayloadMapping({"claims": "claims"}, ("claims[].patient.member_id",))
    opened = {"claims": [{"patient": {"member_id": "M-1"}}, {"patient": {"member_id": "M-2"}}]}
    with pytest.raises(BodyError) as refused:
        build_body(mapping, ENVELOPE, {"claims": "enc:v1:whole-list"}, opened)
    assert refused.value.reason == "reveal_inside_protected_list" and "M-1" not in str(refused.value)
