"""CycloneDX SBOMs of one zip: the Python packages it bundles and the JVM artifacts inside its jar.

- Python (`<stem>.sbom.python.cdx.json`): cyclonedx-py (cyclonedx-bom, in the release tools' virtualenv,
  `tools/release-tools.lock`) over the exact wheels the zip's manifest lists, name==version with each
  wheel's SHA-256, so the SBOM describes what ships, not the build machine's environment. The packages
  the Managed Flink runtime provides (PyFlink's own) are not in the zip and not in this SBOM; the
  manifest names them (`provided_by_runtime`).
- JVM (`<stem>.sbom.jvm.cdx.json`): every Maven artifact shaded into `lib/pyflink-dependencies.jar`,
  from its `META-INF/maven/<group>/<artifact>/pom.properties`, plus the jar itself with its SHA-256
  (a shaded jar keeps no per-artifact hashes). Written here as CycloneDX 1.6 JSON and checked against
  the CycloneDX schema by the same library.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess  # nosec B404 # -- argv lists only, never a shell; each call is justified where it is made
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

from connectors.properties import medistream_home
from tools.package import JAR
from tools.signing import companion_paths

SPEC = "1.6"


class SbomError(RuntimeError):
    """An SBOM could not be produced or does not validate; the message says why."""


def tools_python() -> Path:
    """The release tools' interpreter ($MEDISTREAM_HOME/release-venv, made by ./medistream setup)."""
    python = medistream_home() / "release-venv" / "bin" / "python"
    if not python.exists():
        raise SbomError(f"no release tools at {python}: run ./medistream setup")
    return python


def _wheel_pins(manifest: dict[str, Any]) -> list[str]:
    """`name==version --hash=sha256:...` per bundled wheel (name and version from the wheel's file name)."""
    pins = []
    for wheel, digest in sorted(manifest["wheels"].items()):
        name, version = wheel.split("-")[:2]
        pins.append(f"{name.replace('_', '-')}=={version} --hash=sha256:{digest}")
    return pins


def python_sbom(zip_path: Path, manifest: dict[str, Any]) -> Path:
    """Write the Python SBOM with cyclonedx-py; its path."""
    out = companion_paths(zip_path)["python_sbom"]
    with tempfile.TemporaryDirectory(prefix="medistream-sbom-") as folder:
        requirements = Path(folder) / "bundled.txt"
        requirements.write_text("\n".join(_wheel_pins(manifest)) + "\n")
        # The release venv's interpreter and a fixed argv of our own files, no shell.
        done = subprocess.run([str(tools_python()), "-m", "cyclonedx_py", "requirements",  # noqa: S603 - fixed argv
                               str(requirements), "--sv", SPEC, "--of", "JSON", "--output-reproducible",
                               "-o", str(out)],
                              capture_output=True, text=True, timeout=300, check=False)
    if done.returncode:
        raise SbomError(f"cyclonedx-py failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return out


def maven_components(jar: bytes) -> list[dict[str, Any]]:
    """One CycloneDX component per Maven artifact shaded into the jar (its pom.properties)."""
    found = []
    with zipfile.ZipFile(io.BytesIO(jar)) as archive:
        for name in sorted(archive.namelist()):
            if not (name.startswith("META-INF/maven/") and name.endswith("/pom.properties")):
                continue
            props = dict(line.split("=", 1) for line in archive.read(name).decode("utf-8", "replace").splitlines()
                         if "=" in line and not line.startswith("#"))
            group, artifact, version = (props.get(k, "").strip() for k in ("groupId", "artifactId", "version"))
            if group and artifact and version:
                purl = f"pkg:maven/{group}/{artifact}@{version}"
                found.append({"type": "library", "bom-ref": purl, "group": group, "name": artifact,
                              "version": version, "purl": purl})
    return found


def jvm_sbom(zip_path: Path, manifest: dict[str, Any]) -> Path:
    """Write the JVM SBOM of the zip's jar; its path."""
    with zipfile.ZipFile(zip_path) as archive:
        jar = archive.read(JAR)
    digest = hashlib.sha256(jar).hexdigest()
    jar_ref = f"file:{JAR}"
    components = maven_components(jar)
    bom = {"bomFormat": "CycloneDX", "specVersion": SPEC, "version": 1,
           # Reproducible: the serial number derives from the jar's digest.
           "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'medistream-jar:' + digest)}",
           "metadata": {"component": {"type": "application", "bom-ref": jar_ref, "name": "pyflink-dependencies",
                                      "version": str(manifest.get("version", "")),
                                      "hashes": [{"alg": "SHA-256", "content": digest}]}},
           "components": components,
           "dependencies": [{"ref": jar_ref, "dependsOn": [c["bom-ref"] for c in components]}]}
    out = companion_paths(zip_path)["jvm_sbom"]
    out.write_text(json.dumps(bom, indent=1, sort_keys=True) + "\n")
    validate(out)
    return out


_VALIDATE = """
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())
if errors:
    sys.exit(str(errors)[:400])
"""


def validate(path: Path) -> None:
    """Check an SBOM against the CycloneDX 1.6 JSON schema (cyclonedx-python-lib); SbomError if it fails."""
    done = subprocess.run([str(tools_python()), "-c", _VALIDATE, str(path)],  # noqa: S603 - fixed script, our file
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode:
        raise SbomError(f"{path.name} is not valid CycloneDX {SPEC}: {(done.stderr or done.stdout).strip()[-400:]}")


def component_count(path: Path) -> int:
    """How many components an SBOM lists."""
    return len(json.loads(path.read_text()).get("components", []))
