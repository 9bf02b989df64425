"""The provenance statement of one zip: in-toto Statement v1 with an SLSA v1 provenance predicate.

It records what built the zip (builder, commit, when), from what (the commit, requirements.lock,
pom.xml, the jar and every bundled wheel, each with its digest) and the release gates' results, one
entry per gate with its outcome and seconds. `medistream sign` outside a release writes it with no
gates (`"gates": []`), so a reader can tell a released artifact from a developer's signed build.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import platform
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.properties import REPO_ROOT
from tools.signing import companion_paths, sha256_file

BUILD_TYPE = "https://medistream.local/release/v1"
INPUT_FILES = ("requirements.lock", "pom.xml", "pyproject.toml", "lib/pyflink-dependencies.jar")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def builder_id(builder: str | None = None) -> str:
    """Who built: CodeBuild's build ARN when it is set, else user@host (the developer's machine)."""
    if builder:
        return builder
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"medistream-local://{user}@{socket.gethostname()}"


def statement(zip_path: Path, manifest: Mapping[str, Any], gates: Sequence[Mapping[str, Any]],
              builder: str | None = None, started: str | None = None) -> dict[str, Any]:
    """The provenance of `zip_path` (built from `manifest`'s commit) with the gates' results."""
    inputs = [{"uri": f"git+file://{REPO_ROOT}@{manifest['commit']}", "digest": {"gitCommit": manifest["commit"]}}]
    for name in INPUT_FILES:
        path = REPO_ROOT / name
        if path.is_file():
            inputs.append({"name": name, "digest": {"sha256": sha256_file(path)}})
    inputs += [{"name": f"wheel:{wheel}", "digest": {"sha256": digest}}
               for wheel, digest in sorted(manifest["wheels"].items())]
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": zip_path.name, "digest": {"sha256": sha256_file(zip_path)}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"commit": manifest["commit"], "version": manifest.get("version"),
                                       "target": manifest.get("target")},
                "internalParameters": {"python": platform.python_version()},
                "resolvedDependencies": inputs},
            "runDetails": {
                "builder": {"id": builder_id(builder)},
                "metadata": {"invocationId": hashlib.sha256(f"{zip_path.name}{_now()}".encode()).hexdigest()[:16],
                             "startedOn": started or _now(), "finishedOn": _now()},
                "byproducts": [{"name": "gates", "content": list(gates)}]}},
    }


def write(zip_path: Path, manifest: Mapping[str, Any], gates: Sequence[Mapping[str, Any]],
          builder: str | None = None, started: str | None = None) -> Path:
    """Write `<stem>.provenance.json` beside the zip; its path."""
    out = companion_paths(zip_path)["provenance"]
    out.write_text(json.dumps(statement(zip_path, manifest, gates, builder, started), indent=1) + "\n")
    return out


def gates_of(path: Path) -> list[dict[str, Any]]:
    """The gate results a provenance file records ([] for a build signed outside a release)."""
    doc = json.loads(path.read_text())
    for product in doc["predicate"]["runDetails"].get("byproducts", []):
        if product.get("name") == "gates":
            return list(product["content"])
    return []
