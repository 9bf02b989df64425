"""Protection: tokens, masks, field ciphertexts and sealed copies; every misuse fails closed."""

from __future__ import annotations

import copy
import dataclasses
from datetime import date
from typing import Any

import orjson
import pytest

from infra.local import synthetic
from infra.local.static_keys import STATIC_CMK, StaticKeySource, static_protectors, static_token_keys
from schemas.phi_policy import load_policy
from udfs.ingest import Refused
from udfs.phi.envelope import DataKeyCache
from udfs.phi.errors import KeyRevoked, PolicyGap, Tampered, UnknownKeyVersion, WrongContext
from udfs.phi.masks import age_band, birth_year, zip3
from udfs.phi.protect import HEADER, Protector
from udfs.phi.tokens import Tokenizer


@pytest.fixture(scope="module")
def records() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for g in synthetic.generate(200, seed=11, invalid_rate=0.0, duplicate_rate=0.0):
        record = orjson.loads(g.payload)
        if g.record_type == "claim" and "patient" not in record:
            continue  # keep a claim whose patient is not the subscriber: both persons get protected
        if g.record_type == "eligibility" and not record.get("dependents"):
            continue
        out.setdefault(g.record_type, record)
    assert set(out) == {"claim", "payment", "eligibility"}
    return out


@pytest.fixture
def protector() -> Protector:
    return static_protectors()["default-v1"]


def protect(protector: Protector, record: dict[str, Any], record_type: str) -> dict[str, Any]:
    return protector.protect(record, record_type, orjson.dumps(record)).record


def test_identifiers_become_tokens_ciphertexts_or_masks(protector: Protector, records: dict) -> None:
    claim = records["claim"]
    out = protect(protector, claim, "claim")
    person = out["subscriber"]
    assert person["member_id"].startswith("t1.") and person["member_id"] != claim["subscriber"]["member_id"]
    assert person["first_name"].startswith("e1.") and person["address"]["line1"].startswith("e1.")
    assert person["address"]["zip"] == claim["subscriber"]["address"]["zip"][:3] or person["address"]["zip"] == "000"
    assert person["birth_date"] in {"0-17", "18-25", "26-34", "35-44", "45-54", "55-64", "65-74", "75-84", "85-89",
                                    "90+"}
    assert "phone" not in person  # dropped
    assert person["person_token"].startswith("t1.")
    assert out["claim_id"].startswith("t1.")
    assert out["service_lines"] == claim["service_lines"] and out["payer"] == claim["payer"]  # clear
    assert out[HEADER]["policy"] == "default-v1" and out[HEADER]["cmk"] == STATIC_CMK


@pytest.mark.parametrize("record_type", ["claim", "payment", "eligibility"])
def test_no_protected_value_survives_in_the_protected_form(protector: Protector, records: dict,
                                                           record_type: str) -> None:
    record = records[record_type]
    policy = load_policy("default-v1")
    body = orjson.dumps(protect(protector, record, record_type)).decode()
    pairs = leaves(record)
    clear = {v for path, v in pairs if policy.rule(record_type, path).action == "clear"}  # e.g. a provider's name
    secret = [v for path, v in pairs if policy.rule(record_type, path).action != "clear" and len(v) >= 4
              and not any(v in c for c in clear)]
    assert secret, "the sample record should hold protected values"
    assert [v for v in secret if v in body] == []


def leaves(node: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        return [x for k, v in node.items() for x in leaves(v, f"{path}.{k}" if path else k)]
    if isinstance(node, list):
        return [x for v in node for x in leaves(v, f"{path}[]")]
    return [(path, node)] if isinstance(node, str) else []


def test_tokens_join_across_record_types_and_feeds(protector: Protector, records: dict) -> None:
    eligibility = copy.deepcopy(records["eligibility"])
    claim = copy.deepcopy(records["claim"]) | {"feed": "another_feed"}
    eligibility["member"]["member_id"] = claim["subscriber"]["member_id"]
    a = protect(protector, claim, "claim")["subscriber"]["member_id"]
    b = protect(protector, eligibility, "eligibility")["member"]["member_id"]
    assert a == b


def test_name_and_birth_date_token_ignores_case_and_spacing(protector: Protector, records: dict) -> None:
    record = copy.deepcopy(records["eligibility"])
    first = protect(protector, record, "eligibility")["member"]["person_token"]
    record["member"]["first_name"] = "  " + record["member"]["first_name"].upper()
    assert protect(protector, record, "eligibility")["member"]["person_token"] == first
    record["member"]["birth_date"] = "1901-01-01"
    assert protect(protector, record, "eligibility")["member"]["person_token"] != first


def test_field_ciphertexts_open_only_in_their_place(protector: Protector, records: dict) -> None:
    record = records["eligibility"]
    out = protect(protector, record, "eligibility")
    assert protector.open_field(out, "member.first_name", out["member"]["first_name"]) == record["member"]["first_name"]
    dependent = out["dependents"][0]["first_name"]
    assert protector.open_field(out, "dependents[0].first_name", dependent) == record["dependents"][0]["first_name"]
    with pytest.raises(Tampered, match="moved"):  # a ciphertext copied to another field
        protector.open_field(out, "member.last_name", out["member"]["first_name"])
    with pytest.raises(Tampered):  # or to another record
        protector.open_field(out | {"record_id": "01J0000000000000000000000Z"}, "member.first_name",
                             out["member"]["first_name"])
    flipped = out["member"]["first_name"][:-2] + ("A" if out["member"]["first_name"][-2] != "A" else "B") + \
        out["member"]["first_name"][-1]
    with pytest.raises(Tampered):
        protector.open_field(out, "member.first_name", flipped)


def test_sealed_copy_opens_with_its_context_only(protector: Protector, records: dict) -> None:
    record = records["payment"]
    sealed = protector.protect(record, "payment", orjson.dumps(record)).sealed
    assert protector.open_record(sealed, record["feed"], record["record_id"]) == record
    with pytest.raises(WrongContext, match="record_id"):
        protector.open_record(sealed, record["feed"], "01J0000000000000000000000Z")
    doc = orjson.loads(sealed)
    doc["ct"] = doc["ct"][:-4] + ("AAAA" if doc["ct"][-4:] != "AAAA" else "BBBB")
    with pytest.raises(Tampered):
        protector.open_record(orjson.dumps(doc).decode(), record["feed"], record["record_id"])
    with pytest.raises(Tampered, match="not a sealed document"):
        protector.open_record("{}", record["feed"], record["record_id"])


def test_a_revoked_key_leaves_its_data_unreadable(records: dict) -> None:
    source = StaticKeySource()
    writer = static_protectors(keys=DataKeyCache(source))["default-v1"]
    record = records["claim"]
    sealed = writer.protect(record, "claim", orjson.dumps(record)).sealed
    reader = static_protectors(keys=DataKeyCache(source))["default-v1"]  # a fresh process: no cached keys
    source.revoked.add(STATIC_CMK)
    with pytest.raises(KeyRevoked):
        reader.open_record(sealed, record["feed"], record["record_id"])


def test_token_key_rotation_keeps_old_tokens_verifiable() -> None:
    v1, v2 = Tokenizer(static_token_keys(1)), Tokenizer(static_token_keys(2))
    old, new = v1.token("member_id", "W123456789"), v2.token("member_id", "W123456789")
    assert old.startswith("t1.") and new.startswith("t2.") and old != new
    assert v2.matches(old, "member_id", "W123456789") and v2.matches(new, "member_id", "W123456789")
    assert not v2.matches(old, "member_id", "W000000000")
    assert v1.linkage("x") == v2.linkage("x")  # dedup keys survive a token-key rotation
    with pytest.raises(UnknownKeyVersion, match="version 2 is not held"):
        v1.matches(new, "member_id", "W123456789")
    with pytest.raises(Tampered):
        v2.version_of("W123456789")


def test_data_keys_rotate_by_use_count_and_age() -> None:
    now = [0.0]
    source = StaticKeySource()
    cache = DataKeyCache(source, max_uses=100, max_age_s=60, clock=lambda: now[0])
    ids = {cache.encryption_key("claims").key.key_id for _ in range(250)}
    assert len(ids) == 3 and source.calls["GenerateDataKey"] == 3
    now[0] = 61.0
    assert cache.encryption_key("claims").key.key_id not in ids
    assert source.calls["GenerateDataKey"] == 4


def test_a_data_key_of_one_domain_does_not_open_as_another() -> None:
    source = StaticKeySource()
    key = source.generate("claims")
    with pytest.raises(WrongContext):
        source.decrypt("eligibility", key.encrypted, key.cmk)


def test_key_material_stays_out_of_reprs() -> None:
    keys = static_token_keys(2)
    key = StaticKeySource().generate("claims")
    assert keys.versions[1].hex() not in repr(keys) and "plaintext" not in repr(key)


def test_masks_follow_safe_harbor() -> None:
    on = date(2026, 6, 1)
    assert birth_year("1980-07-04", on) == "1980"
    assert birth_year("1930-01-01", on) == "90+" and age_band("1930-01-01", on) == "90+"
    assert age_band("1980-07-04", on) == "45-54" and age_band("2026-01-01", on) == "0-17"
    assert zip3("03601-1234", on) == "000" and zip3("94103-0001", on) == "941"


def test_a_field_without_a_rule_is_a_policy_gap_and_the_stage_dead_letters_it(records: dict) -> None:
    from schemas.contracts import parse_contract
    from udfs.ingest import IngestStage
    from udfs.source import SourceRef

    policy = load_policy("default-v1")
    rules = dict(policy.rules)
    rules["payment"] = {p: r for p, r in policy.rules["payment"].items() if p != "method"}
    gapped = Protector(dataclasses.replace(policy, rules=rules), Tokenizer(static_token_keys()),
                       DataKeyCache(StaticKeySource()))
    with pytest.raises(PolicyGap, match="no rule for method"):
        gapped.protect(records["payment"], "payment", b"{}")
    contract = parse_contract({"feed": "unit_payments", "owner": "team@medistream.example", "record_type": "payment",
                               "schema_version": "1.0", "sources": ["kafka"], "format": {"type": "json"},
                               "phi_policy": "default-v1", "routes": ["archive"]}, "unit_payments.yaml")
    stage = IngestStage({"unit_payments": contract}, {"default-v1": gapped})
    record = records["payment"] | {"feed": "unit_payments"}
    [outcome] = stage.process(orjson.dumps(record), SourceRef.from_kafka("raw.unit_payments", 0, 7), 0)
    assert isinstance(outcome, Refused) and outcome.error.reason_code == "phi_policy_gap"
    assert outcome.record == record  # what the operator seals into the dead letter
