"""Release signing: the zip, its SBOMs and its provenance under one KMS signature, checked before any deploy.

    medistream sign dist/<zip> [--environment local|dev|prod]     # SBOMs + provenance if missing, then sign
    medistream verify dist/<zip> [--environment local|dev|prod]   # digests and signature; exit 0, else 2

What is signed: an in-toto Statement v1 (`<zip>.dsse.json`, a DSSE envelope) whose subjects are the zip
and its three companions beside it (`<stem>.sbom.python.cdx.json`, `<stem>.sbom.jvm.cdx.json`,
`<stem>.provenance.json`), each by name and SHA-256. The envelope's pre-authentication encoding (a few
hundred bytes) goes to KMS `Sign` with ECDSA_SHA_256 and MessageType RAW, so KMS hashes it: the local
KMS (moto 5.2.5) ignores MessageType DIGEST and hashes a digest again (probed, decision 0031), and RAW
behaves the same on both.

How it is checked (`verify`): the trusted key is the environment's signing key, named by alias in
config (`local`: the `phi` group's KMS endpoint, alias/medistream/release-signing; `dev`/`prod`:
AWS, alias/medistream-<env>/release-signing, or MEDISTREAM_SIGNING_KEY). It must be Enabled
(DescribeKey); its public key comes from KMS `GetPublicKey` and the signature is checked here with
`cryptography`, never by asking KMS `Verify`: the verdict does not depend on the key service's own
verification (moto answers a bad signature with SignatureValid false where AWS raises), and the deploy
role needs kms:DescribeKey and kms:GetPublicKey only. A zip with no envelope, an envelope whose
signature is by another key, a signature that does not verify, a subject missing, or a file whose
SHA-256 differs from its signed one is refused, naming which.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://medistream.local/release-files/v1"
ALGORITHM = "ECDSA_SHA_256"
KEY_SPEC = "ECC_NIST_P256"
LOCAL_ALIAS = "alias/medistream/release-signing"
ENVIRONMENTS = ("local", "dev", "prod")
KMS_RAW_LIMIT = 4096  # bytes KMS Sign takes as a RAW message
COMPANIONS = {"python_sbom": ".sbom.python.cdx.json", "jvm_sbom": ".sbom.jvm.cdx.json",
              "provenance": ".provenance.json"}


class SignatureError(RuntimeError):
    """The artifact cannot be signed, or is refused by verification; the message says which check failed."""


@dataclass(frozen=True)
class SigningSettings:
    """Which KMS key signs releases of one environment, and where its KMS answers (endpoint "" = AWS)."""

    environment: str
    key: str  # alias or key ARN
    endpoint: str
    region: str

    @classmethod
    def for_environment(cls, environment: str = "local") -> SigningSettings:
        """`local`: the local stack's KMS (the `phi` group's endpoint); `dev`/`prod`: AWS in AWS_REGION."""
        if environment not in ENVIRONMENTS:
            raise SignatureError(f"no signing environment {environment!r} (one of {', '.join(ENVIRONMENTS)})")
        if environment == "local":
            from connectors.properties import default_properties_path, load_phi_config, read_property_groups

            phi = load_phi_config(read_property_groups(default_properties_path()))
            return cls("local", os.environ.get("MEDISTREAM_SIGNING_KEY") or LOCAL_ALIAS, phi.endpoint, phi.region)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
        if not region:
            raise SignatureError(f"signing for {environment} needs AWS_REGION")
        key = os.environ.get("MEDISTREAM_SIGNING_KEY") or f"alias/medistream-{environment}/release-signing"
        return cls(environment, key, "", region)

    def client(self) -> Any:
        """A boto3 KMS client at this endpoint (credentials: the environment's or the role's)."""
        import boto3
        from botocore.config import Config

        return boto3.client("kms", endpoint_url=self.endpoint or None, region_name=self.region,
                            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}))


@dataclass(frozen=True)
class Verified:
    """A release that passed every check: which key signed it and the files it covers, by SHA-256."""

    zip: str
    key_arn: str
    subjects: dict[str, str]
    signed_at: str


def envelope_path(zip_path: Path) -> Path:
    """Where the signature of a zip lives: `<zip>.dsse.json` beside it."""
    return zip_path.with_name(zip_path.name + ".dsse.json")


def companion_paths(zip_path: Path) -> dict[str, Path]:
    """The SBOMs and the provenance that travel with a zip, by role."""
    return {role: zip_path.with_name(zip_path.stem + suffix) for role, suffix in COMPANIONS.items()}


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (the zip is ~220 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature covers (type and payload, length-prefixed)."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _kms_call(what: str, call: Any, **kwargs: Any) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return dict(call(**kwargs))
    except ClientError as err:
        error = err.response.get("Error", {})
        raise SignatureError(f"KMS {what}: {error.get('Code')}: {error.get('Message')}") from None
    except BotoCoreError as err:
        raise SignatureError(f"KMS {what}: {err}") from None


def ensure_local_key(settings: SigningSettings, kms: Any | None = None) -> str:
    """The local signing key's ARN, created once (ECC_NIST_P256, SIGN_VERIFY) on the local KMS only.

    On AWS the key belongs to the pipeline stack (infra/aws/pipeline.py): code never creates it there.
    """
    if settings.environment != "local":
        raise SignatureError("only the local stack's signing key is created by medistream; AWS keys come from "
                             "the pipeline stack")
    from botocore.exceptions import BotoCoreError, ClientError

    kms = kms or settings.client()
    try:
        return str(kms.describe_key(KeyId=settings.key)["KeyMetadata"]["Arn"])
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "NotFoundException":
            raise SignatureError(f"KMS DescribeKey {settings.key}: {err}") from None
    except BotoCoreError as err:  # the local stack's KMS does not answer
        raise SignatureError(f"KMS DescribeKey {settings.key} at {settings.endpoint}: {err} (is the local stack up? "
                             "./medistream stack up)") from None
    if not settings.key.startswith("alias/"):
        raise SignatureError(f"no local signing key {settings.key}")
    created = _kms_call("CreateKey", kms.create_key, KeySpec=KEY_SPEC, KeyUsage="SIGN_VERIFY",
                        Description="medistream release signing (local stack)")["KeyMetadata"]
    _kms_call("CreateAlias", kms.create_alias, AliasName=settings.key, TargetKeyId=created["KeyId"])
    return str(created["Arn"])


def statement(zip_path: Path, files: Sequence[Path], key_arn: str) -> dict[str, Any]:
    """The in-toto statement over `files` (the zip first), each by name and SHA-256."""
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": path.name, "digest": {"sha256": sha256_file(path)}} for path in files],
            "predicateType": PREDICATE_TYPE,
            "predicate": {"zip": zip_path.name, "signer": key_arn,
                          "signedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}}


def sign(zip_path: Path, settings: SigningSettings, kms: Any | None = None) -> Path:
    """Sign the zip and its three companions (all must exist beside it); the envelope's path."""
    files = [zip_path, *companion_paths(zip_path).values()]
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        raise SignatureError(f"cannot sign {zip_path.name}: missing {', '.join(missing)} (run `medistream sign`, "
                             "which writes the SBOMs and provenance, or `medistream release`)")
    kms = kms or settings.client()
    key_arn = ensure_local_key(settings, kms) if settings.environment == "local" else settings.key
    payload = json.dumps(statement(zip_path, files, key_arn), sort_keys=True, separators=(",", ":")).encode()
    message = pae(PAYLOAD_TYPE, payload)
    if len(message) > KMS_RAW_LIMIT:
        raise SignatureError(f"the statement is {len(message)} bytes, KMS signs at most {KMS_RAW_LIMIT} raw")
    signed = _kms_call("Sign", kms.sign, KeyId=settings.key, Message=message, MessageType="RAW",
                       SigningAlgorithm=ALGORITHM)
    envelope = {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
                "signatures": [{"keyid": signed["KeyId"], "sig": base64.b64encode(signed["Signature"]).decode()}]}
    target = envelope_path(zip_path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(envelope, indent=1) + "\n")
    partial.replace(target)
    return target


def trusted_key(settings: SigningSettings, kms: Any | None = None) -> tuple[str, Any]:
    """(key ARN, public key) of the environment's signing key, from KMS GetPublicKey; refused if not P-256."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    kms = kms or settings.client()
    # DescribeKey for the ARN (the local KMS's GetPublicKey answers a bare key id, AWS's an ARN) and the state:
    # a disabled release key (revoked after a compromise) signs nothing that deploys.
    meta = _kms_call(f"DescribeKey {settings.key}", kms.describe_key, KeyId=settings.key)["KeyMetadata"]
    if meta.get("KeyState") != "Enabled":
        raise SignatureError(f"the release key {meta['Arn']} is {meta.get('KeyState')}: nothing it signed deploys")
    found = _kms_call(f"GetPublicKey {settings.key}", kms.get_public_key, KeyId=meta["Arn"])
    spec = found.get("KeySpec") or found.get("CustomerMasterKeySpec")
    public = load_der_public_key(found["PublicKey"])
    if spec != KEY_SPEC or not isinstance(public, ec.EllipticCurvePublicKey) or \
            ALGORITHM not in found.get("SigningAlgorithms", []):
        raise SignatureError(f"{settings.key} is a {spec} key, not an {KEY_SPEC} signing key")
    return str(meta["Arn"]), public


def verify(zip_path: Path, settings: SigningSettings, kms: Any | None = None) -> Verified:
    """Every check of the module docstring, in order; SignatureError naming the first that fails."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if not zip_path.is_file():
        raise SignatureError(f"no zip at {zip_path}")
    where = envelope_path(zip_path)
    if not where.is_file():
        raise SignatureError(f"{zip_path.name} is unsigned: no {where.name} beside it")
    try:
        envelope = json.loads(where.read_text())
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [(str(s["keyid"]), base64.b64decode(s["sig"], validate=True)) for s in envelope["signatures"]]
        payload_type = envelope["payloadType"]
    except (ValueError, KeyError, TypeError) as err:
        raise SignatureError(f"{where.name} is not a signature envelope ({type(err).__name__})") from None
    if payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"{where.name}: payload type {payload_type!r}, expected {PAYLOAD_TYPE}")
    key_arn, public = trusted_key(settings, kms)
    by_key = [sig for keyid, sig in signatures if keyid == key_arn]
    if not by_key:
        others = ", ".join(sorted({keyid for keyid, _ in signatures})) or "none"
        raise SignatureError(f"{zip_path.name} is signed by another key ({others}), not by the {settings.environment} "
                             f"release key {key_arn}")
    try:
        public.verify(by_key[0], pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError(f"{where.name}: the signature does not verify with {key_arn}: the envelope was "
                             "altered") from None
    claimed = json.loads(payload)
    if claimed.get("_type") != STATEMENT_TYPE or claimed.get("predicateType") != PREDICATE_TYPE:
        raise SignatureError(f"{where.name}: not a medistream release statement")
    subjects = {s["name"]: s["digest"]["sha256"] for s in claimed["subject"]}
    required = [zip_path, *companion_paths(zip_path).values()]
    for path in required:
        if path.name not in subjects:
            raise SignatureError(f"{path.name} is not among the signed files of {zip_path.name}")
    for path in required:
        if not path.is_file():
            raise SignatureError(f"{path.name} (signed) is missing beside {zip_path.name}")
        if sha256_file(path) != subjects[path.name]:
            raise SignatureError(f"{path.name} does not match its signed SHA-256: tampered with or swapped")
    return Verified(zip_path.name, key_arn, subjects, str(claimed["predicate"].get("signedAt", "")))
