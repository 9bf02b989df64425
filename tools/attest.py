"""`medistream sign` and `medistream verify`, and the check every deploy runs first (audited).

    medistream sign dist/<zip> [--environment local]     # SBOMs + provenance (no gates) if missing, then KMS Sign
    medistream verify dist/<zip> [--environment local]   # exit 0 verified, 2 refused (one line saying why)

`check_for_deploy` is what `medistream deploy` (local cluster) and the Managed Flink back end of
`medistream jobs` call before they unpack, inspect or upload a zip: `tools.signing.verify` with the
signing key of the target's environment, then, for `prod`, a provenance whose every gate passed (a
developer's `medistream sign` records none). Each verdict is written to the audit log first (action
`artifact_verify`, grant or deny, the zip's name and why): a refused zip leaves a record and nothing
is submitted; a verdict that cannot be recorded stops the deploy too.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

from connectors.audit import AuditEvent, load_audit_settings, open_audit_log
from connectors.properties import default_properties_path, read_property_groups
from tools import provenance, sbom
from tools.signing import ENVIRONMENTS, SignatureError, SigningSettings, Verified, companion_paths, sign, verify

REQUIRE_RELEASED = ("prod",)  # environments that take only zips `medistream release` built and every gate passed


def attest(zip_path: Path, gates: list[dict[str, Any]] | None = None, builder: str | None = None,
           started: str | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Write the zip's SBOMs and provenance (each only if missing, unless `overwrite`); their paths."""
    with zipfile.ZipFile(zip_path) as archive:
        manifest = json.loads(archive.read("MANIFEST.json"))
    paths = companion_paths(zip_path)
    if overwrite or not paths["python_sbom"].exists():
        sbom.python_sbom(zip_path, manifest)
    if overwrite or not paths["jvm_sbom"].exists():
        sbom.jvm_sbom(zip_path, manifest)
    if overwrite or not paths["provenance"].exists():
        provenance.write(zip_path, manifest, gates or [], builder, started)
    return paths


def sign_local(zip_path: Path) -> Path:
    """Attest and sign a zip with the local stack's release key (what `medistream sign` does); the zip's path.

    For the local cluster only: dev and prod verify against their own keys, which sign in the pipeline."""
    attest(zip_path)
    sign(zip_path, SigningSettings.for_environment("local"))
    return zip_path


def actor_name() -> str:
    """Who is deploying: the OS user (CodeBuild: its build user; the pipeline's role is in CloudTrail)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _audit(audit: Any, actor: str, decision: str, reason: str) -> None:
    log = audit or open_audit_log(load_audit_settings(read_property_groups(default_properties_path())))
    log.append(AuditEvent(actor=actor, role="deployer", purpose="release", action="artifact_verify",
                          decision=decision, feed=None, record_id=None, fields=(), reason=reason[:300]))


def check_for_deploy(zip_path: Path, target: str, settings: SigningSettings, actor: str | None = None,
                     audit: Any = None) -> Verified:
    """Verify the zip for a deploy to `target` and audit the verdict; SignatureError if refused."""
    actor = actor or actor_name()
    try:
        verified = verify(zip_path, settings)
        if settings.environment in REQUIRE_RELEASED:
            gates = provenance.gates_of(companion_paths(zip_path)["provenance"])
            failed = [g.get("name") for g in gates if g.get("result") != "passed"]
            if not gates or failed:
                detail = f"gates not passed: {', '.join(map(str, failed))}" if failed else "no gates"
                raise SignatureError(f"{zip_path.name} was not built by a passing `medistream release` ({detail})")
    except SignatureError as err:
        _audit(audit, actor, "deny", f"deploy {zip_path.name} to {target} refused: {err}")
        raise
    _audit(audit, actor, "grant", f"deploy {zip_path.name} to {target}: signed by {verified.key_arn}")
    return verified


def main_sign(argv: list[str] | None = None) -> int:
    """`medistream sign ZIP`: SBOMs and provenance if missing, then the KMS signature; JSON on stdout."""
    parser = argparse.ArgumentParser(prog="medistream sign", description=main_sign.__doc__)
    parser.add_argument("zip", type=Path)
    parser.add_argument("--environment", choices=ENVIRONMENTS, default="local")
    args = parser.parse_args(argv)
    try:
        paths = attest(args.zip)
        envelope = sign(args.zip, SigningSettings.for_environment(args.environment))
    except (SignatureError, sbom.SbomError, OSError, KeyError, zipfile.BadZipFile) as err:
        print(f"medistream sign: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"signed": str(envelope), **{k: str(v) for k, v in paths.items()}}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`medistream verify ZIP`: 0 and what was verified, or 2 and one line saying which check refused it."""
    parser = argparse.ArgumentParser(prog="medistream verify", description=__doc__.split("\n", 1)[0])
    parser.add_argument("zip", type=Path)
    parser.add_argument("--environment", choices=ENVIRONMENTS, default="local")
    args = parser.parse_args(argv)
    try:
        verified = verify(args.zip, SigningSettings.for_environment(args.environment))
    except SignatureError as err:
        print(f"medistream verify: REFUSED: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"verified": verified.zip, "key": verified.key_arn, "signed_at": verified.signed_at,
                      "subjects": verified.subjects}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
