"""Key material from AWS KMS and Secrets Manager (moto server locally): data keys, token keys, rotation.

- Data keys: one customer master key (CMK) per data domain behind `alias/medistream/<domain>`;
  GenerateDataKey / Decrypt with the encryption context {"medistream:domain": <domain>}, so a
  data key issued for one domain cannot be opened as another's.
- Token keys: the secret `<token secret>` holds only KMS-encrypted copies of the HMAC keys
  ({"current": n, "versions": {"1": edk, ...}, "linkage": edk}); reading plaintext keys needs both
  secretsmanager:GetSecretValue and kms:Decrypt on the tokens CMK. Nothing here logs key material.
- Rotation without downtime: a new token key version becomes current while old ones keep
  verifying; a new CMK replaces a domain's alias while the old CMK keeps decrypting its data keys.
- Crypto-shredding: disabling and scheduling deletion of a CMK makes every data key it wrapped,
  and so every ciphertext under them, unreadable (docs/phi-protection.md).
Key state is checked with DescribeKey before use: AWS KMS refuses disabled keys itself, moto does not.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from udfs.phi.envelope import DataKey
from udfs.phi.errors import KeyRevoked, KeyUnavailable, WrongContext
from udfs.phi.tokens import TokenKeys

TOKENS_DOMAIN = "tokens"
_USABLE = "Enabled"


@dataclass(frozen=True)
class PhiConfig:
    """Where protection keys live; no key material, only names."""

    endpoint: str  # AWS API endpoint override (moto server locally); "" = AWS itself
    region: str
    alias_prefix: str  # "alias/medistream/" + domain
    token_secret: str
    data_key_max_uses: int
    data_key_max_age_s: float


def aws_client(cfg: PhiConfig, service: str) -> Any:
    """A boto3 client for KMS / Secrets Manager / DynamoDB at the configured endpoint."""
    return boto3.client(service, endpoint_url=cfg.endpoint or None, region_name=cfg.region)


def _context(domain: str, **extra: str) -> dict[str, str]:
    return {"medistream:domain": domain} | {f"medistream:{k.replace('_', '-')}": v for k, v in extra.items()}


def _failure(err: Exception, what: str) -> Exception:
    # Map the service's answer to a fail-closed, PHI-free error (nothing from the request is echoed).
    code = err.response.get("Error", {}).get("Code", "") if isinstance(err, ClientError) else ""
    if code in ("DisabledException", "KMSInvalidStateException"):
        return KeyRevoked(f"{what}: the key is disabled or pending deletion")
    if code in ("InvalidCiphertextException", "IncorrectKeyException"):
        return WrongContext(f"{what}: the encrypted key belongs to another key or domain, or was changed")
    if code in ("NotFoundException", "ResourceNotFoundException"):
        return KeyUnavailable(f"{what}: no such key or secret")
    if code in ("AccessDeniedException", "AccessDenied"):
        return KeyUnavailable(f"{what}: not permitted for this role")
    return KeyUnavailable(f"{what}: key service error {code or type(err).__name__}")


class KmsDataKeys:
    """DataKeySource over KMS; counts its calls (the figure behind "KMS calls per million records")."""

    def __init__(self, kms: Any, alias_prefix: str) -> None:
        self.kms, self.alias_prefix = kms, alias_prefix
        self.calls: Counter[str] = Counter()
        self.errors = 0  # calls that failed or found the key unusable (the KMS-errors alert)

    def _failed(self, err: Exception, what: str) -> Exception:
        self.errors += 1
        return _failure(err, what) if isinstance(err, ClientError | BotoCoreError) else err

    def _check_enabled(self, key_id: str, what: str) -> str:
        self.calls["DescribeKey"] += 1
        try:
            meta = self.kms.describe_key(KeyId=key_id)["KeyMetadata"]
        except (ClientError, BotoCoreError) as err:
            raise self._failed(err, what) from None
        if meta.get("KeyState") != _USABLE:
            raise self._failed(KeyRevoked(f"{what}: the key is {meta.get('KeyState', 'unusable').lower()}"), what)
        return str(meta["Arn"])

    def generate(self, domain: str) -> DataKey:
        """A new AES-256 data key under the domain's current CMK."""
        alias = self.alias_prefix + domain
        self._check_enabled(alias, f"data key for domain {domain}")
        self.calls["GenerateDataKey"] += 1
        try:
            out = self.kms.generate_data_key(KeyId=alias, KeySpec="AES_256", EncryptionContext=_context(domain))
        except (ClientError, BotoCoreError) as err:
            raise self._failed(err, f"data key for domain {domain}") from None
        return DataKey(domain, str(out["KeyId"]), bytes(out["CiphertextBlob"]), bytes(out["Plaintext"]))

    def decrypt(self, domain: str, encrypted: bytes, cmk: str) -> DataKey:
        """Open a data key's encrypted copy (the CMK that wrapped it must still be enabled)."""
        self._check_enabled(cmk, f"data key of domain {domain}")
        self.calls["Decrypt"] += 1
        try:
            out = self.kms.decrypt(CiphertextBlob=encrypted, KeyId=cmk, EncryptionContext=_context(domain))
        except (ClientError, BotoCoreError) as err:
            raise self._failed(err, f"data key of domain {domain}") from None
        return DataKey(domain, cmk, encrypted, bytes(out["Plaintext"]))


def _read_secret(secrets: Any, secret_id: str) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(secrets.get_secret_value(SecretId=secret_id)["SecretString"])
    except (ClientError, BotoCoreError) as err:
        raise _failure(err, f"token keys secret {secret_id}") from None
    return doc


def _open_key(kms: Any, edk: str, what: str, **context: str) -> bytes:
    try:
        out = kms.decrypt(CiphertextBlob=base64.b64decode(edk), EncryptionContext=_context(TOKENS_DOMAIN, **context))
        return bytes(out["Plaintext"])
    except (ClientError, BotoCoreError) as err:
        raise _failure(err, what) from None


def load_token_keys(secrets: Any, kms: Any, secret_id: str) -> TokenKeys:
    """Every token key version and the linkage key, decrypted in memory (operator open() only)."""
    doc = _read_secret(secrets, secret_id)
    # token_key= names a key version in the encryption context: a label, not a secret (S106).
    versions = {int(v): _open_key(kms, edk, f"token key v{v}", token_key=str(v))
                for v, edk in doc["versions"].items()}
    linkage = _open_key(kms, doc["linkage"], "linkage key", token_key="linkage")  # noqa: S106 - a label
    return TokenKeys(int(doc["current"]), versions, linkage)


def configured_token_keys(cfg: PhiConfig, kms: Any | None = None) -> TokenKeys:
    """The token keys named by the `phi` properties (the job's open(), start-up checks, test oracles)."""
    return load_token_keys(aws_client(cfg, "secretsmanager"), kms or aws_client(cfg, "kms"), cfg.token_secret)


def _new_wrapped_key(kms: Any, alias_prefix: str, **context: str) -> str:
    out = kms.generate_data_key(KeyId=alias_prefix + TOKENS_DOMAIN, KeySpec="AES_256",
                                EncryptionContext=_context(TOKENS_DOMAIN, **context))
    return base64.b64encode(out["CiphertextBlob"]).decode()


def _alias_target(kms: Any, alias: str) -> str | None:
    for page in kms.get_paginator("list_aliases").paginate():
        for entry in page["Aliases"]:
            if entry["AliasName"] == alias and entry.get("TargetKeyId"):
                return str(kms.describe_key(KeyId=entry["TargetKeyId"])["KeyMetadata"]["Arn"])
    return None


def ensure_domain_keys(kms: Any, alias_prefix: str, domains: list[str]) -> dict[str, str]:
    """A CMK behind alias_prefix + domain for every domain (idempotent); ARN per domain."""
    arns: dict[str, str] = {}
    for domain in sorted(set(domains) | {TOKENS_DOMAIN}):
        alias = alias_prefix + domain
        arn = _alias_target(kms, alias)
        if arn is None:
            key = kms.create_key(Description=f"medistream {domain} data keys")["KeyMetadata"]
            kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
            arn = str(key["Arn"])
        arns[domain] = arn
    return arns


def ensure_token_secret(secrets: Any, kms: Any, alias_prefix: str, secret_id: str) -> int:
    """Create the token-keys secret with version 1 and a linkage key when missing; the current version."""
    try:
        return int(_read_secret(secrets, secret_id)["current"])
    except KeyUnavailable:
        pass
    # token_key= names a key version in the encryption context: a label, not a secret (S106).
    # B106 - token_key= is a key version label in the encryption context, not a password
    first = _new_wrapped_key(kms, alias_prefix, token_key="1")  # noqa: S106
    doc = {"current": 1, "versions": {"1": first},
           # B106 - token_key= is a key label in the encryption context, not a password
           "linkage": _new_wrapped_key(kms, alias_prefix, token_key="linkage")}  # noqa: S106
    secrets.create_secret(Name=secret_id, SecretString=json.dumps(doc),
                          Description="medistream token keys (KMS-encrypted copies only)")
    return 1


def rotate_token_key(secrets: Any, kms: Any, alias_prefix: str, secret_id: str) -> int:
    """Add a new token key version and make it current; older versions stay for verification."""
    doc = _read_secret(secrets, secret_id)
    version = max(int(v) for v in doc["versions"]) + 1
    doc["versions"][str(version)] = _new_wrapped_key(kms, alias_prefix, token_key=str(version))
    doc["current"] = version
    secrets.put_secret_value(SecretId=secret_id, SecretString=json.dumps(doc))
    return version


def rotate_domain_key(kms: Any, alias_prefix: str, domain: str) -> tuple[str | None, str]:
    """Point the domain's alias at a new CMK; the old one keeps decrypting. (old ARN, new ARN)."""
    alias = alias_prefix + domain
    old = _alias_target(kms, alias)
    key = kms.create_key(Description=f"medistream {domain} data keys")["KeyMetadata"]
    if old is None:
        kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    else:
        kms.update_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    return old, str(key["Arn"])


def shred_key(kms: Any, key_arn: str, pending_days: int = 7) -> str:
    """Crypto-shred: disable the CMK now and schedule its deletion; returns the deletion date."""
    key_id = key_arn.rsplit("/", 1)[-1]  # the key id works everywhere (moto's DisableKey refuses an ARN)
    kms.disable_key(KeyId=key_id)
    out = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=pending_days)
    return str(out["DeletionDate"])
