"""Release signing against the local stack's KMS (moto server, real wire API): sign, verify, tamper, refuse.

A small zip shaped like `medistream package`'s (a manifest, a jar with Maven metadata) is attested (SBOMs
with cyclonedx-py and from the jar, provenance) and signed with the local release key through KMS Sign.
Each tampering -- one byte of the zip flipped, the SBOM swapped, everything re-signed with another
key, no signature at all -- is refused by `medistream verify`, by `medistream deploy` before anything
is unpacked or submitted, and by the Managed Flink back end before anything is uploaded; each refusal
leaves a `deny` entry in an audit log of the test's own.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.audit import AuditLog, ensure_audit_table
from infra.local import moto_server
from infra.local.settings import StackSettings
from tools import attest, deploy, signing
from tools.cluster_config import ClusterSettings
from tools.signing import SignatureError, SigningSettings

pytestmark = pytest.mark.integration


def jar_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as jar:
        jar.writestr("META-INF/maven/org.apache.flink/flink-connector-kafka/pom.properties",
                     "groupId=org.apache.flink\nartifactId=flink-connector-kafka\nversion=4.0.1-2.0\n")
        jar.writestr("org/example/A.class", b"\xca\xfe\xba\xbe")
    return out.getvalue()


def make_zip(folder: Path, name: str = "medistream-9.9.9+gtest-py3.12.zip") -> Path:
    """A zip with what `attest` reads: MANIFEST.json (commit, wheels) and the jar."""
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("MANIFEST.json", json.dumps({"commit": "0" * 40, "version": "9.9.9", "files": {},
                                                      "target": {"python": "3.12"}, "wheels": {
                                                          "six-1.17.0-py2.py3-none-any.whl": "ab" * 32}}))
        archive.writestr("lib/pyflink-dependencies.jar", jar_bytes())
        archive.writestr("application-code/jobs/ingest.py", "print('job')\n")
    return path


@pytest.fixture
def audit(stack: StackSettings) -> Iterator[AuditLog]:
    client = moto_server.client(stack, "dynamodb")
    name = f"medistream-audit-signing-{uuid.uuid4().hex[:8]}"
    ensure_audit_table(client, name)
    try:
        yield AuditLog(client, name)
    finally:
        client.delete_table(TableName=name)


@pytest.fixture
def local() -> SigningSettings:
    return SigningSettings.for_environment("local")


@pytest.fixture
def signed(tmp_path: Path, local: SigningSettings) -> Path:
    zip_path = make_zip(tmp_path)
    attest.attest(zip_path)
    signing.sign(zip_path, local)
    return zip_path


def decisions(log: AuditLog) -> list[tuple[str, str]]:
    return [(e["decision"], e["reason"]) for e in log.entries() if e["action"] == "artifact_verify"]


def test_signed_release_verifies_offline_with_the_public_key(signed: Path, local: SigningSettings) -> None:
    verified = signing.verify(signed, local)
    names = {signed.name, *(p.name for p in signing.companion_paths(signed).values())}
    assert set(verified.subjects) == names
    assert verified.key_arn.startswith("arn:aws:kms:") and verified.key_arn.endswith(
        local.client().describe_key(KeyId=local.key)["KeyMetadata"]["KeyId"])
    envelope = json.loads(signing.envelope_path(signed).read_text())
    assert envelope["payloadType"] == signing.PAYLOAD_TYPE and len(envelope["signatures"]) == 1
    jvm = json.loads(signing.companion_paths(signed)["jvm_sbom"].read_text())
    assert [c["purl"] for c in jvm["components"]] == ["pkg:maven/org.apache.flink/flink-connector-kafka@4.0.1-2.0"]
    python = json.loads(signing.companion_paths(signed)["python_sbom"].read_text())
    assert [c["purl"] for c in python["components"]] == ["pkg:pypi/six@1.17.0"]
    assert attest.main([str(signed)]) == 0


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def swap_sbom(path: Path) -> None:
    """Replace the JVM SBOM with one that lists another component (one hiding a vulnerable jar, say)."""
    sbom = signing.companion_paths(path)["jvm_sbom"]
    data = json.loads(sbom.read_text())
    data["components"].append({"type": "library", "name": "log4j-core", "group": "org.apache.logging.log4j",
                               "version": "2.14.1", "purl": "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
                               "bom-ref": "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"})
    sbom.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def resign_with_another_key(path: Path, local: SigningSettings) -> None:
    alias = f"alias/medistream-test/other-{uuid.uuid4().hex[:8]}"
    signing.sign(path, SigningSettings("local", alias, local.endpoint, local.region))


TAMPERINGS = {
    "flipped byte": (lambda p, t, s: flip_one_byte(p), "does not match its signed SHA-256"),
    "swapped sbom": (lambda p, t, s: swap_sbom(p), ".sbom.jvm.cdx.json does not match its signed SHA-256"),
    "another key": (lambda p, t, s: resign_with_another_key(p, s), "is signed by another key"),
    "unsigned": (lambda p, t, s: signing.envelope_path(p).unlink(), "is unsigned"),
    "altered envelope": (lambda p, t, s: _alter_payload(p), "the signature does not verify"),
}


def _alter_payload(path: Path) -> None:
    """Re-point the signed statement at another zip digest without re-signing it."""
    import base64

    where = signing.envelope_path(path)
    envelope = json.loads(where.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    where.write_text(json.dumps(envelope))


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_tampered_release_is_refused_everywhere_and_audited(tampering: str, signed: Path, tmp_path: Path,
                                                            local: SigningSettings, audit: AuditLog,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    alter, why = TAMPERINGS[tampering]
    alter(signed, tmp_path, local)
    with pytest.raises(SignatureError, match=why):
        signing.verify(signed, local)
    assert attest.main([str(signed)]) == 2
    assert "REFUSED" in capsys.readouterr().err

    # deploy: refused before the cluster is even looked at (there is none at this home) and nothing recorded
    cluster = dataclasses.replace(ClusterSettings.from_env(), home=tmp_path / "no-cluster")
    with pytest.raises(deploy.DeployError, match=f"refused, nothing submitted: .*{why}"):
        deploy.deploy(signed, ["ingest"], settings=cluster, audit=audit)
    assert not deploy.registry(cluster).exists()
    assert not (tmp_path / "no-cluster").exists()
    denied = decisions(audit)
    assert len(denied) == 1 and denied[0][0] == "deny" and signed.name in denied[0][1]


def test_deploy_of_a_signed_zip_passes_the_check_and_is_audited(signed: Path, tmp_path: Path,
                                                                audit: AuditLog) -> None:
    cluster = dataclasses.replace(ClusterSettings.from_env(), home=tmp_path / "no-cluster")
    # Past the signature the next check is the manifest's: this test zip lists no files, so it fails there.
    with pytest.raises(deploy.DeployError) as refused:
        deploy.deploy(signed, ["ingest"], settings=cluster, audit=audit)
    assert "refused, nothing submitted" not in str(refused.value)
    (decision, reason), = decisions(audit)
    assert decision == "grant" and "signed by arn:aws:kms:" in reason


def test_prod_takes_only_a_passing_release(signed: Path, local: SigningSettings, audit: AuditLog) -> None:
    prod = SigningSettings("prod", local.key, local.endpoint, local.region)  # the local key standing in for prod's
    with pytest.raises(SignatureError, match="not built by a passing `medistream release` .no gates"):
        attest.check_for_deploy(signed, "Managed Flink prod", prod, audit=audit)
    gates = [{"name": "ruff", "result": "passed", "seconds": 1.0}, {"name": "tests", "result": "failed"}]
    attest.attest(signed, gates=gates, overwrite=True)
    signing.sign(signed, local)
    with pytest.raises(SignatureError, match="gates not passed: tests"):
        attest.check_for_deploy(signed, "Managed Flink prod", prod, audit=audit)
    attest.attest(signed, gates=gates[:1], overwrite=True)
    signing.sign(signed, local)
    assert attest.check_for_deploy(signed, "Managed Flink prod", prod, audit=audit).zip == signed.name
    assert [d for d, _ in decisions(audit)] == ["deny", "deny", "grant"]


def test_sign_cli_writes_all_four_and_verify_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zip_path = make_zip(tmp_path)
    assert attest.main_sign([str(zip_path)]) == 0
    written = json.loads(capsys.readouterr().out)
    assert Path(written["signed"]).is_file() and all(Path(written[k]).is_file() for k in signing.COMPANIONS)
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in tmp_path.glob(zip_path.stem + "*"):
        shutil.copy(path, copy)
    assert attest.main([str(copy / zip_path.name)]) == 0  # the set travels: verified wherever it lands
