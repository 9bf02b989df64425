"""The services' image (Dockerfile, .dockerignore): what can be held without a Docker engine on this machine.

The image is not built here (no engine, no hadolint). What is checked: Python 3.12; the install takes every
version from requirements.lock (and --require-hashes exactly when the lock has hashes); the image runs as the
unprivileged user the ECS task names; and the build context (the Dockerfile's COPY sources, filtered by
.dockerignore as Docker does) holds every module the services' commands import, proven by importing them
from a copy of that context alone, in a fresh interpreter that cannot see the repository.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from connectors.properties import REPO_ROOT
from infra.aws.config import SERVICES
from infra.aws.doors import IMAGE_USER, SCRATCH

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
LOCK = REPO_ROOT / "requirements.lock"


def _instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path (or one of its parent folders) decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate, pattern = raw.startswith("!"), raw.lstrip("!").rstrip("/")
        regexes = [pattern.removeprefix("**/")] if pattern.startswith("**/") else [pattern]
        for candidate in candidates:
            names = [candidate] + (["/".join(candidate.split("/")[i:]) for i in range(1, candidate.count("/") + 1)]
                                   if pattern.startswith("**/") else [])
            if any(fnmatch.fnmatchcase(name, regex) for name in names for regex in regexes):
                ignored = not negate
                break
    return ignored


def _patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


PROJECT = ("schemas", "udfs", "connectors", "jobs", "tools", "infra", "fresh_imports")


def _module_file(context: Path, name: str) -> Path | None:
    """The file of module `name` in the context, if any."""
    base = context.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _project_imports(context: Path, roots: list[str]) -> set[str]:
    """Every project module reachable from `roots` by import statements (top level or inside functions).

    A module that is missing from the context fails the assertion naming who imports it."""
    seen: set[str] = set()
    todo = [(name, "the services") for name in roots]
    while todo:
        name, importer = todo.pop()
        if name in seen:
            continue
        path = _module_file(context, name)
        assert path is not None, f"{importer} imports {name}, which the image does not hold"
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from a.b import c`: c is a submodule or a name of a.b
                targets = [f"{node.module}.{alias.name}" if _module_file(context, f"{node.module}.{alias.name}")
                           else node.module for alias in node.names]
            for target in targets:
                if target.split(".")[0] in PROJECT:
                    todo.append((target, name))
    return seen


def _copied_sources() -> list[str]:
    """The sources of the final stage's COPY instructions (not --from another stage)."""
    sources: list[str] = []
    for instruction, args in _instructions():
        if instruction == "FROM":
            sources = []  # a new stage: only the last one's files are in the image
        if instruction == "COPY" and not args.startswith("--from"):
            sources += [s.rstrip("/") for s in args.split()[:-1]]
    return sources


def test_python_312_and_every_version_from_the_lock() -> None:
    instructions = _instructions()
    assert [a for i, a in instructions if i == "FROM"] == ["python:3.12-slim-bookworm AS dependencies",
                                                           "python:3.12-slim-bookworm"]
    runs = " ".join(a for i, a in instructions if i == "RUN")
    installs = [cmd for cmd in runs.split("&&") if "pip install " in cmd and "-r " in cmd]
    assert len(installs) == 1
    (install,) = installs
    assert "-c requirements.lock" in install and "--only-binary=:all:" in install
    has_hashes = "--hash=" in LOCK.read_text()
    assert ("--require-hashes" in install) == has_hashes
    # The only other install is the build backend, at pyproject.toml's own pin.
    backend = [cmd for cmd in runs.split("&&") if "pip install " in cmd and "-r " not in cmd]
    assert [c.split()[-1] for c in backend] == ["setuptools==80.9.0"]
    assert 'requires = ["setuptools==80.9.0"]' in (REPO_ROOT / "pyproject.toml").read_text()
    # Source builds only for the lock's source-only pins, each of which the lock pins.
    (no_binary,) = re.findall(r"--no-binary=(\S+)", install)
    pins = {line.split("==")[0].lower() for line in LOCK.read_text().splitlines() if "==" in line}
    assert set(no_binary.split(",")) <= pins


def test_runs_unprivileged_as_the_task_says_writing_only_to_scratch() -> None:
    instructions = _instructions()
    (user,) = [a for i, a in instructions if i == "USER"]
    assert user == IMAGE_USER and not user.startswith("0")
    assert [i for i, _a in instructions][-3:] == ["USER", "ENTRYPOINT", "CMD"]  # nothing runs as root after
    env = " ".join(a for i, a in instructions if i == "ENV")
    assert f"MEDISTREAM_HOME={SCRATCH}/" in env and "PYTHONDONTWRITEBYTECODE=1" in env


def test_the_context_holds_what_each_service_command_imports(tmp_path: Path) -> None:
    """Copy the build context as Docker would, then import tools.cli and each service's module from that copy."""
    from tools.cli import PASSTHROUGH

    patterns = _patterns()
    assert _ignored("tests/unit/test_services_image.py", patterns) and _ignored(".local/x", patterns)
    assert _ignored("infra/aws/app.py", patterns) and not _ignored("infra/local/process.py", patterns)
    # The migration task (`medistream infra migrate-operational`) needs the migrations and the RDS CA bundle.
    assert not _ignored("migrations/postgres/0001_current_state.sql", patterns)
    assert "COPY migrations/ migrations/" in DOCKERFILE.read_text()
    assert not _ignored("infra/aws/certs/rds-global-bundle.pem", patterns)
    assert _ignored("infra/aws/certs/README.md", patterns)
    context = tmp_path / "app"
    for source in _copied_sources():
        src = REPO_ROOT / source
        assert src.exists(), source
        files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
        for file in files:
            rel = file.relative_to(REPO_ROOT).as_posix()
            if not _ignored(rel, patterns):
                (context / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, context / rel)
    assert (context / "requirements.lock").exists() is False  # the final stage copies code, not the lock
    services = ["tools.cli"] + [PASSTHROUGH[command.split()[0]] for command, _group in SERVICES.values()]
    assert len(services) == 1 + len(SERVICES)
    # Their imports at run time are mostly inside functions: follow every import of the project's own packages,
    # at any depth, from the services' modules, and find each in the context (the third-party ones are the lock's).
    closure = _project_imports(context, services)
    assert {"udfs.ingest", "connectors.ingest_api.app", "schemas.contracts"} <= closure, sorted(closure)
    modules = services
    # The image's `medistream` is `python -m tools.cli`: the repository must be invisible (its editable install too).
    script = (
        "import importlib, sys\n"
        f"root = {str(REPO_ROOT)!r}\n"
        "sys.path[:] = [p for p in sys.path if '__editable__' not in p\n"
        "               and (p.rstrip('/') != root and not p.startswith(root + '/') or '.venv' in p)]\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in repr(f)]\n"
        "sys.path_importer_cache.clear()\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(context)!r}), (name, module.__file__)\n"
        "print('ok')\n")
    env = {**os.environ, "PYTHONPATH": str(context), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=context, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert "__main__" in (context / "tools" / "cli.py").read_text()
    entry = " ".join(a for i, a in _instructions() if i == "RUN")
    assert "exec python -m tools.cli" in entry


def test_checkov_dockerfile_checks_pass() -> None:
    """checkov's Dockerfile checks (the checkov ./medistream installs; no hadolint on this machine): 0 failed,
    the one skip (HEALTHCHECK) justified in the Dockerfile."""
    from tools.infra import checkov_bin

    assert checkov_bin().exists(), "./medistream installs checkov"
    done = subprocess.run([str(checkov_bin()), "-f", str(DOCKERFILE), "--framework", "dockerfile", "--quiet",
                           "--compact", "--skip-download", "-o", "json"], capture_output=True, text=True,
                          timeout=300, check=False)
    report = json.loads(done.stdout)
    assert report["summary"]["failed"] == 0 and report["summary"]["passed"] > 40, report["summary"]
    assert report["summary"]["skipped"] == 1
    (skip,) = re.findall(r"checkov:skip=(\S+): (.+)", DOCKERFILE.read_text())
    assert skip[0] == "CKV_DOCKER_2" and len(skip[1]) > 40
