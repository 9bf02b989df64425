"""Partner contracts: the shipped example loads, and a bad one says which file and key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.partner_contract import (
    PARTNERS_DIR,
    PartnerContractError,
    load_partner_contract,
    load_partner_contracts,
    parse_partner_contract,
)
from udfs.contract_checks import check_partner_contracts
from udfs.delivery import RetryPolicy

ALLOWED = {"claim": ["subscriber.member_id", "patient.birth_date", "patient.member_id"]}
EXAMPLE = PARTNERS_DIR / "clearwater_health.yaml"


def example() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return doc


def changed(path: str, value: Any) -> dict[str, Any]:
    """The example with the value at 'a/b/c' replaced (or removed when value is ...)."""
    doc = copy.deepcopy(example())
    *parents, last = path.split("/")
    node = doc
    for part in parents:
        node = node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


def test_the_example_loads_with_its_policy() -> None:
    contracts = load_partner_contracts(ALLOWED)
    contract = contracts["clearwater_health"]
    assert contract == load_partner_contract(EXAMPLE, ALLOWED)
    assert contract.auth.type == "oauth2_client_credentials" and contract.auth.secret_id.startswith("medistream/")
    assert (contract.requests_per_second, contract.burst, contract.concurrency) == (50.0, 100, 16)
    assert RetryPolicy(**contract.retry).max_attempts == 6
    assert contract.payload["claim"].reveal == ("subscriber.member_id", "patient.birth_date")
    assert contract.payload["payment"].reveal == ()
    assert contract.payload["claim"].fields["business_key"] == "$business_key"


def test_hmac_auth_gets_its_defaults() -> None:
    doc = changed("auth", {"type": "hmac", "secret_id": "medistream/partners/x/hmac"})
    contract = parse_partner_contract(doc, "x.yaml", ALLOWED)
    assert (contract.auth.algorithm, contract.auth.header, contract.auth.token_url) == ("sha256", "X-Signature", None)


@pytest.mark.parametrize(("path", "value", "message"), [
    ("endpoint/url", "http://api.clearwater-health.example/v2", "endpoint/url"),
    ("auth/type", "basic", "auth/type"),
    ("auth/token_url", ..., "auth: 'token_url' is a required property"),
    ("auth/algorithm", "sha256", "auth/algorithm"),
    ("auth/secret_id", "has spaces in it", "auth/secret_id"),
    ("rate_limit/requests_per_second", 0, "rate_limit/requests_per_second"),
    ("rate_limit/burst", ..., "rate_limit"),
    ("concurrency", 0, "concurrency"),
    ("retry/max_attempts", 0, "retry/max_attempts"),
    ("retry/base_delay_s", 60, "retry: retry policy"),
    ("lease_s", 5, "lease_s"),
    ("color", "blue", "(top level)"),
    ("payload/claim/fields/member_id", "subscriber.ssn_number", "payload/claim/fields/member_id"),
    ("payload/claim/fields/record_id", "$record_ids", "payload/claim/fields/record_id"),
    ("payload/invoice", {"fields": {"a": "b"}}, "payload"),
    ("payload/claim/reveal", ["subscriber.last_name"], "payload/claim/reveal/0: 'subscriber.last_name' is not in "
                                                     "allowed_reveal_fields"),
    ("payload/claim/reveal", ["patient.member_id"], "payload/claim/reveal/0: 'patient.member_id' is revealed but no"),
    ("payload/claim/reveal", ["subscriber"], "payload/claim/reveal/0: 'subscriber' is not a leaf path"),
    ("payload/payment/reveal", ["claims[].patient.member_id"], "payload/payment/reveal/0"),
])
def test_bad_contracts_name_the_file_and_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(PartnerContractError) as err:
        contract = parse_partner_contract(changed(path, value), "clearwater_health.yaml", ALLOWED)
        check_partner_contracts({contract.partner: contract})  # the retry options, as the delivery job loads them
    assert str(err.value).startswith("clearwater_health.yaml: ")
    assert message in str(err.value)


def test_file_name_must_be_the_partner_id_and_yaml_must_parse(tmp_path: Path) -> None:
    wrong = tmp_path / "other_partner.yaml"
    wrong.write_text(EXAMPLE.read_text())
    with pytest.raises(PartnerContractError, match="other_partner.yaml: partner: 'clearwater_health' must equal"):
        load_partner_contract(wrong, ALLOWED)
    broken = tmp_path / "broken.yaml"
    broken.write_text("partner: [unclosed\n")
    with pytest.raises(PartnerContractError, match="broken.yaml: not valid YAML"):
        load_partner_contract(broken, ALLOWED)
    with pytest.raises(PartnerContractError, match="no partner contracts"):
        load_partner_contracts(ALLOWED, tmp_path / "empty")


def test_nothing_is_revealed_without_a_grant() -> None:
    with pytest.raises(PartnerContractError, match="not in allowed_reveal_fields"):
        load_partner_contract(EXAMPLE, {})
