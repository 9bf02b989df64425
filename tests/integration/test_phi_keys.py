"""Key management on the real KMS / Secrets Manager APIs (moto server): rotation without downtime,
crypto-shredding, and every bad key failing closed with a PHI-free error."""

from __future__ import annotations

import orjson
import pytest

from connectors.kms import (
    KmsDataKeys,
    aws_client,
    ensure_domain_keys,
    ensure_token_secret,
    load_token_keys,
    rotate_domain_key,
    rotate_token_key,
    shred_key,
)
from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups
from udfs.phi.envelope import DataKeyCache, seal, unseal
from udfs.phi.errors import KeyRevoked, KeyUnavailable, Tampered, UnknownKeyVersion, WrongContext
from udfs.phi.tokens import Tokenizer

pytestmark = pytest.mark.integration
CONTEXT = {"feed": "unit_feed", "record_id": "01J0000000000000000000000A", "purpose": "archive"}
SECRET_VALUE = b'{"member": {"first_name": "Synthetic"}}'


@pytest.fixture
def keyring(stack: object, run_id: str) -> dict[str, object]:
    """Keys of their own for this test: an alias prefix and a token secret nobody else uses."""
    phi = load_phi_config(read_property_groups(LOCAL_PROPERTIES))
    kms, secrets = aws_client(phi, "kms"), aws_client(phi, "secretsmanager")
    prefix, secret = f"alias/medistream-t{run_id}/", f"medistream/t{run_id}/token-keys"
    ensure_domain_keys(kms, prefix, ["claims"])
    ensure_token_secret(secrets, kms, prefix, secret)
    return {"kms": kms, "secrets": secrets, "prefix": prefix, "secret": secret}


def test_token_key_rotation_keeps_old_tokens_verifiable_and_dedup_stable(keyring: dict) -> None:
    kms, secrets, prefix, secret = keyring["kms"], keyring["secrets"], keyring["prefix"], keyring["secret"]
    before = Tokenizer(load_token_keys(secrets, kms, secret))
    old = before.token("member_id", "W100000001")
    assert rotate_token_key(secrets, kms, prefix, secret) == 2
    after = Tokenizer(load_token_keys(secrets, kms, secret))
    new = after.token("member_id", "W100000001")
    assert old.startswith("t1.") and new.startswith("t2.")
    assert after.matches(old, "member_id", "W100000001") and after.matches(new, "member_id", "W100000001")
    assert after.linkage("claim|P1|C1|1") == before.linkage("claim|P1|C1|1")
    with pytest.raises(UnknownKeyVersion):
        before.matches(new, "member_id", "W100000001")  # a job that has not reloaded fails closed


def test_domain_rotation_then_shredding_the_old_cmk(keyring: dict) -> None:
    kms, prefix = keyring["kms"], keyring["prefix"]
    source = KmsDataKeys(kms, prefix)
    old_doc = seal(DataKeyCache(source), "claims", SECRET_VALUE, CONTEXT)
    old_cmk, new_cmk = rotate_domain_key(kms, prefix, "claims")
    assert old_cmk and old_cmk != new_cmk
    new_doc = seal(DataKeyCache(source), "claims", SECRET_VALUE, CONTEXT)
    assert orjson.loads(new_doc)["cmk"] == new_cmk
    # Rotation without downtime: data under the old CMK still opens, through a fresh cache.
    assert unseal(DataKeyCache(source), old_doc, CONTEXT) == SECRET_VALUE
    shred_key(kms, old_cmk)
    with pytest.raises(KeyRevoked, match="pending"):
        unseal(DataKeyCache(source), old_doc, CONTEXT)
    assert unseal(DataKeyCache(source), new_doc, CONTEXT) == SECRET_VALUE


def test_bad_keys_and_ciphertexts_fail_closed_without_echoing_anything(keyring: dict) -> None:
    kms, prefix = keyring["kms"], keyring["prefix"]
    source = KmsDataKeys(kms, prefix)
    doc = seal(DataKeyCache(source), "claims", SECRET_VALUE, CONTEXT)
    failures: list[Exception] = []
    with pytest.raises(KeyUnavailable, match="no such key"):  # missing key
        KmsDataKeys(kms, prefix + "nothing-here/").generate("claims")
    with pytest.raises(WrongContext, match="record_id") as wrong:  # wrong encryption context
        unseal(DataKeyCache(source), doc, CONTEXT | {"record_id": "01J0000000000000000000000B"})
    failures.append(wrong.value)
    forged = orjson.loads(doc) | {"domain": "eligibility"}  # the data key was issued for claims
    with pytest.raises(WrongContext) as other_domain:
        unseal(DataKeyCache(source), orjson.dumps(forged), CONTEXT)
    failures.append(other_domain.value)
    tampered = orjson.loads(doc)
    tampered["ct"] = tampered["ct"][:-6] + ("AAAAAA" if not tampered["ct"].endswith("AAAAAA") else "BBBBBB")
    with pytest.raises(Tampered) as broken:
        unseal(DataKeyCache(source), orjson.dumps(tampered), CONTEXT)
    failures.append(broken.value)
    for err in failures:
        assert "Synthetic" not in str(err) and SECRET_VALUE.decode() not in str(err)
    with pytest.raises(KeyUnavailable, match="no such key or secret"):
        load_token_keys(keyring["secrets"], kms, "medistream/no-such-secret")
