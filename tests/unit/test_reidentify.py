"""Re-identification decisions: deny by default, grants only for the role's purposes and fields."""

from __future__ import annotations

import pytest

from schemas.phi_access import AccessRulesError, load_access, parse_access
from udfs.phi.reidentify import decide, leaf_path, pick

RULES = load_access()


def test_a_granted_role_sees_its_fields_for_its_purpose() -> None:
    decision = decide(RULES, "care_coordinator", "care_coordination", "eligibility",
                      ["member.first_name", "member.address.line1", "dependents[2].birth_date"])
    assert decision.granted


@pytest.mark.parametrize(("role", "purpose", "record_type", "fields", "why"), [
    ("analyst", "care_coordination", "eligibility", ["member.first_name"], "may not re-identify for purpose"),
    ("care_coordinator", "marketing", "eligibility", ["member.first_name"], "for purpose marketing"),
    ("care_coordinator", "care_coordination", "claim", ["subscriber.first_name"], "may not see subscriber.first_name"),
    ("care_coordinator", "care_coordination", "eligibility", ["member.ssn"], "may not see member.ssn"),
    ("fraud_investigator", "fraud_investigation", "claim", ["subscriber.address.line1"], "subscriber.address.line1"),
    ("nobody", "fraud_investigation", "claim", ["claim_id"], "unknown role"),
])
def test_everything_else_is_denied_with_a_reason(role: str, purpose: str, record_type: str, fields: list[str],
                                                 why: str) -> None:
    decision = decide(RULES, role, purpose, record_type, fields)
    assert not decision.granted and why in decision.reason


def test_star_stays_within_one_path_segment() -> None:
    rules = parse_access({"roles": {"r": {"purposes": ["p"], "fields": {"claim": ["subscriber.*"]}}}}, "t.yaml")
    assert decide(rules, "r", "p", "claim", ["subscriber.first_name"]).granted
    assert not decide(rules, "r", "p", "claim", ["subscriber.address.zip"]).granted


def test_a_pattern_matching_no_field_is_an_error() -> None:
    with pytest.raises(AccessRulesError, match="'subscriber.shoe_size' matches no field"):
        parse_access({"roles": {"r": {"purposes": ["p"], "fields": {"claim": ["subscriber.shoe_size"]}}}}, "t.yaml")


def test_concrete_paths_pick_values_and_map_to_policy_paths() -> None:
    record = {"claims": [{"patient": {"first_name": "A"}}, {"patient": {"first_name": "B"}}]}
    assert pick(record, "claims[1].patient.first_name") == "B"
    assert leaf_path("claims[1].patient.first_name") == "claims[].patient.first_name"
    with pytest.raises(IndexError):
        pick(record, "claims[5].patient.first_name")
