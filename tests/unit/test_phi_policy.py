"""PHI policies: every canonical field has exactly one rule, and a bad policy stops start-up."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas import RECORD_TYPES, leaf_paths
from schemas.contracts import ContractError, parse_contract
from schemas.phi_policy import POLICY_DIR, PolicyError, key_domains, load_policy, parse_policy

DOCUMENT: dict[str, Any] = yaml.safe_load((POLICY_DIR / "default-v1.yaml").read_text())


def test_every_canonical_field_has_a_rule() -> None:
    policy = load_policy("default-v1")
    for record_type in RECORD_TYPES:
        assert set(policy.rules[record_type]) == set(leaf_paths(record_type))


def test_identifiers_are_never_clear() -> None:
    policy = load_policy("default-v1")
    for record_type in RECORD_TYPES:
        for rule in policy.rules[record_type].values():
            if rule.cls in ("direct_identifier", "free_text"):
                assert rule.action in ("token", "encrypt", "drop"), rule.path


def test_member_ids_join_across_record_types() -> None:
    policy = load_policy("default-v1")
    namespaces = {policy.rule("claim", "subscriber.member_id").namespace,
                  policy.rule("eligibility", "member.member_id").namespace,
                  policy.rule("payment", "claims[].patient.member_id").namespace}
    assert namespaces == {"member_id"}


def test_each_record_type_has_its_key_domain() -> None:
    assert key_domains() == ["claims", "dead_letters", "devices", "eligibility", "payments"]


def _broken(edit: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DOCUMENT)
    edit(doc)
    return doc


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["record_types"]["eligibility"]["member"].pop("ssn"), "no rule for field member.ssn"),
    (lambda d: d["record_types"]["claim"].update({"shoe_size": {"class": "health", "action": "clear"}}),
     "shoe_size is not a canonical field"),
    (lambda d: d["record_types"]["eligibility"]["member"].update(
        {"ssn": {"class": "direct_identifier", "action": "clear"}}), "member.ssn: a direct_identifier field"),
    (lambda d: d["record_types"]["eligibility"]["member"].update(
        {"ssn": {"class": "direct_identifier", "action": "token"}}), "member.ssn: token needs a namespace"),
    (lambda d: d["record_types"]["eligibility"]["member"].update(
        {"birth_date": {"class": "quasi_identifier", "action": "mask", "method": "decade"}}), "mask needs a method"),
    (lambda d: d["record_types"]["eligibility"]["member"].update(
        {"gender": {"class": "quasi_identifier", "action": "scramble"}}), "action must be one of"),
    (lambda d: d["record_types"]["claim"].update({"subscriber": {"$fieldset": "nobody"}}), "unknown fieldset"),
    (lambda d: d["record_types"]["eligibility"]["member"].update({"$derive": {"person_token": ["shoe_size"]}}),
     "derived person_token reads member.shoe_size"),
    (lambda d: d["domains"].pop("payment"), "domains/payment"),
])
def test_a_bad_policy_names_the_field(edit: Any, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(_broken(edit), "default-v1.yaml")


def test_a_contract_naming_a_missing_policy_fails_at_load() -> None:
    doc = {"feed": "unit_feed", "owner": "team@medistream.example", "record_type": "claim", "schema_version": "1.0",
           "sources": ["kafka"], "format": {"type": "json"}, "phi_policy": "no-such-policy", "routes": ["archive"]}
    with pytest.raises(ContractError, match="unit_feed.yaml: phi_policy: .*no-such-policy"):
        parse_contract(doc, "unit_feed.yaml")


def test_a_policy_file_must_carry_its_own_name(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(DOCUMENT))
    with pytest.raises(PolicyError, match="must equal the file name"):
        load_policy("other", tmp_path)
