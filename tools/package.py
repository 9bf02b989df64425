"""`medistream package`: the Managed Flink zip of one commit, built reproducibly (decision 0016).

    ./medistream package [--python 3.12] [--out dist/]

dist/medistream-<version>+g<commit>.zip holds, at its root (the application root MSF unpacks):
- `run_<job>.py`: one entry point per Flink job (the `python` run option), which first checks the
  runtime against the manifest (Python version, glibc) and fails with a clear message if it differs;
- `application-code/` (a `pyFiles` folder): `schemas/`, `udfs/`, `connectors/`, `jobs/`, read from the
  commit (not the working tree: nothing uncommitted, no `.local/`, no tests, tools or secrets);
- `site-packages/` (the `pyFiles` run option): the third-party packages the jobs need, unpacked from
  wheels for the target CPython and Linux x86_64, minus everything the runtime's PyFlink brings
  (MSF provides PyFlink and its dependencies and installs nothing else);
- `application-code/certs/rds-global-bundle.pem`: AWS's RDS global CA bundle, the trust root the ingest job
  verifies the operational store (Aurora, `sslmode=verify-full`) against, read from the commit's
  `infra/aws/certs/` and refused unless its SHA-256 is the pinned one (decision 0041); a commit from before the
  bundle (an older release built again for an upgrade test or a rollback) names none and is packaged without;
- `lib/pyflink-dependencies.jar` (the `jarfile` run option): every connector and format, one jar;
- `MANIFEST.json`: commit, target, run options per job, the wheels used and the SHA-256 of every
  other file in the zip.

Reproducible: entries sorted, timestamps fixed (1980-01-01), modes normalised, no `__pycache__`, the
jar re-written the same way; two builds of one commit give byte-identical zips. Wheels are cached
under $MEDISTREAM_HOME/wheelhouse/<target>/.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import subprocess  # nosec B404 # -- argv lists only, never a shell
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from connectors.properties import PLACEHOLDER, REPO_ROOT, medistream_home

CODE_PACKAGES = ("schemas", "udfs", "connectors", "jobs", "fresh_imports.py")
# The Flink jobs a Managed Flink application runs (the doors and the Snowflake loader are services).
# (Iceberg maintenance is not one: it drives Iceberg's actions from its own JVM on a schedule.)
ENTRY_POINTS = {"ingest": "jobs.ingest", "partner_delivery": "jobs.partner_delivery"}
RUN_OPTIONS_GROUP = "kinesis.analytics.flink.run.options"
ENVIRONMENTS_DIR = REPO_ROOT / "conf" / "environments"
JAR = "lib/pyflink-dependencies.jar"
# AWS's RDS global CA bundle (https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem), committed and pinned
# by the digest AWS's published bundle has (infra/aws/certs/README.md: where it came from, how it was checked, how to
# renew it); the zip carries it beside the code, where the flink stack's OperationalSslRootCert points by default.
RDS_CA_BUNDLE = "infra/aws/certs/rds-global-bundle.pem"
RDS_CA_BUNDLE_SHA256 = "e5bb2084ccf45087bda1c9bffdea0eb15ee67f0b91646106e466714f9de3c7e3"
SITE = "site-packages"
# Flink ships each pyFiles folder to the Python workers and puts it on their path, and nothing of the
# zip's root: the project's packages go in a folder of their own (measured on the local cluster:
# ModuleNotFoundError: No module named 'jobs' on the TaskManagers with the code at the root).
CODE = "application-code"
RDS_CA_ENTRY = f"{CODE}/certs/rds-global-bundle.pem"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Platform tags a wheel may carry for Linux x86_64, newest glibc first (manylinux_2_28 is the oldest
# glibc our lock can use: confluent-kafka and cryptography ship nothing older; decision 0016).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_12_x86_64", "manylinux2010_x86_64",
             "manylinux_2_5_x86_64", "manylinux1_x86_64")


class PackageError(RuntimeError):
    """The zip cannot be built as asked; the message says what to fix."""


@dataclass(frozen=True)
class Target:
    """The runtime a zip is built for."""

    python: str  # "3.12": Managed Flink 2.2 (Flink 2.2.0, Python 3.12)
    platform: str = "linux_x86_64"

    @property
    def abi(self) -> str:
        """The CPython ABI tag, cp312."""
        return "cp" + self.python.replace(".", "")


def _marker_env(target: Target, extra: str = "") -> dict[str, str]:
    # The installed patch release when it is the target's (markers such as `python_full_version < "3.11.3"`
    # must agree with what pip installed here), else the target's first.
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    full = platform.python_version() if here == target.python else f"{target.python}.0"
    return {"python_version": target.python, "python_full_version": full, "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "os_name": "posix", "extra": extra}


def dependency_closure(roots: Iterable[str], target: Target) -> dict[str, str]:
    """{distribution: installed version} of `roots` and everything they require on the target (extras included)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(r), False) for r in roots]
    while todo:
        req, via_extra = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            if via_extra:
                continue  # an extra's optional package the lock does not hold: not used here either
            raise PackageError(f"{req.name} is required but not installed in this environment: run ./medistream "
                               "setup") from None
        found[name] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate(_marker_env(target, e)) for e in ("", *req.extras)):
                todo.append((Requirement(sub.name + (f"[{','.join(sorted(sub.extras))}]" if sub.extras else "")),
                             sub.marker is not None and "extra" in str(sub.marker)))
    return found


def bundle_set(target: Target) -> tuple[dict[str, str], dict[str, str]]:
    """(packages to bundle, packages the runtime's PyFlink provides), each {name: version} as locked here."""
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    runtime = dependency_closure(["apache-flink"], target)
    ours = dependency_closure([d for d in deps if not d.startswith("apache-flink")], target)
    return ({n: v for n, v in ours.items() if n not in runtime},
            {n: v for n, v in ours.items() if n in runtime})


def fetch_wheels(pins: Mapping[str, str], target: Target, wheelhouse: Path) -> list[Path]:
    """One wheel per pin for the target, from the cache or PyPI (binary only: nothing is compiled)."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    wanted = sorted(f"{name}=={version}" for name, version in pins.items())
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    result = subprocess.run(  # noqa: S603 - our own interpreter and pinned names, no shell
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--only-binary=:all:", "--python-version", target.python, "--implementation", "cp",
         "--abi", target.abi, "--abi", "abi3", "--abi", "none", *platforms, "--platform", "any",
         "--dest", str(wheelhouse), *wanted], capture_output=True, text=True, check=False)
    if result.returncode:
        raise PackageError(f"no wheel for CPython {target.python} on Linux x86_64: {result.stderr.strip()[-600:]}")
    wheels = []
    for name, version in sorted(pins.items()):
        stem = f"{name.replace('-', '_')}-{version}-".lower()
        matches = sorted(w for w in wheelhouse.glob("*.whl") if w.name.lower().startswith(stem))
        if not matches:
            raise PackageError(f"pip fetched no wheel for {name}=={version}")
        wheels.append(matches[-1])
    return wheels


def wheel_entries(wheel: Path) -> Iterator[tuple[str, bytes, bool]]:
    """(path under site-packages, bytes, executable) of a wheel's importable files, as pip would place them."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            name = info.filename
            if info.is_dir() or "__pycache__" in name or name.endswith(".pyc"):
                continue
            head, _, rest = name.partition("/")
            if head.endswith(".data"):
                kind, _, inner = rest.partition("/")
                if kind not in ("purelib", "platlib"):
                    continue  # scripts and headers are not importable
                name = inner
            yield f"{SITE}/{name}", archive.read(info), bool((info.external_attr >> 16) & 0o111)


def git(*args: str) -> bytes:
    """Run git in the repository; raise PackageError with its message on failure."""
    # B603, B607 - git from PATH with our own arguments, no shell
    done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, check=False)  # noqa: S603,S607
    if done.returncode:
        raise PackageError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def code_entries(commit: str) -> Iterator[tuple[str, bytes, bool]]:
    """The project's packages as committed: every tracked file under CODE_PACKAGES."""
    listing = git("ls-tree", "-r", "-z", commit, "--", *CODE_PACKAGES).split(b"\0")
    for line in filter(None, listing):
        meta, path = line.split(b"\t", 1)
        mode, kind, blob = meta.split()
        if kind != b"blob" or b"__pycache__" in path:
            continue
        yield path.decode(), git("cat-file", "blob", blob.decode()), mode == b"100755"


def rds_ca_bundle(commit: str) -> bytes | None:
    """The RDS CA bundle as committed in `commit`, None for a commit from before it (whose code names no bundle:
    an older release packaged again, for an upgrade or a rollback); PackageError when a commit that names it lacks
    it or holds other bytes than the pinned bundle."""
    try:
        data = git("show", f"{commit}:{RDS_CA_BUNDLE}")
    except PackageError:
        if not _names_rds_ca_bundle(commit):
            return None
        raise PackageError(f"{RDS_CA_BUNDLE} is not in commit {commit[:12]}: the ingest job verifies the operational "
                           "store's TLS certificate against AWS's RDS global CA bundle and cannot connect without it "
                           "(infra/aws/certs/README.md says where it comes from)") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != RDS_CA_BUNDLE_SHA256:
        raise PackageError(f"{RDS_CA_BUNDLE} in commit {commit[:12]} has SHA-256 {digest}, not the pinned "
                           f"{RDS_CA_BUNDLE_SHA256}: a new bundle is checked and pinned in one reviewed change "
                           "(infra/aws/certs/README.md)")
    return data


def _names_rds_ca_bundle(commit: str) -> bool:
    """Whether any Python file of `commit` names the bundle's entry in the zip (its flink stack points the
    operational store's TLS trust root there)."""
    # B603, B607 - git from PATH with our own arguments, no shell; exit 1 is "no match"
    done = subprocess.run(["git", "grep", "-q", "-F", RDS_CA_ENTRY.split("/", 1)[1], commit, "--", "*.py"],  # noqa: S603,S607
                          cwd=REPO_ROOT, capture_output=True, check=False)
    if done.returncode > 1:
        raise PackageError(f"git grep in {commit[:12]}: {done.stderr.decode(errors='replace').strip()}")
    return done.returncode == 0


def normalized_jar(data: bytes) -> bytes:
    """The jar re-written with sorted entries and fixed timestamps (Maven's shade output varies by build)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        names = sorted({i.filename for i in src.infolist()}, key=lambda n: (n != "META-INF/MANIFEST.MF", n))
        for name in names:
            _write(dst, name, src.read(name), executable=False)
    return out.getvalue()


def _normalized_jar_cached(data: bytes) -> bytes:
    # Keyed by the input's digest, so the cache can only ever return what normalized_jar would.
    cache = medistream_home() / "package-cache" / f"{hashlib.sha256(data).hexdigest()}.jar"
    if cache.exists():
        return cache.read_bytes()
    normalized = normalized_jar(data)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial")
    partial.write_bytes(normalized)
    partial.replace(cache)
    return normalized


def entry_script(job: str, module: str) -> bytes:
    """The `python` run option of one job: check the runtime against the manifest, then run the job."""
    return f'''"""Managed Flink entry point of the {job} job (written by `medistream package`)."""

import json
import os
import sys
from pathlib import Path

manifest = json.loads((Path(__file__).resolve().parent / "MANIFEST.json").read_text())
want = manifest["target"]
have_python = "%d.%d" % sys.version_info[:2]
if have_python != want["python"]:
    sys.exit(f"medistream: this zip is built for Python {{want['python']}}, the runtime runs {{have_python}}")
libc = (os.confstr("CS_GNU_LIBC_VERSION") or "glibc 0.0").split()[-1]
if tuple(map(int, libc.split(".")[:2])) < tuple(map(int, want["glibc"].split("."))):
    sys.exit(f"medistream: the bundled packages need glibc {{want['glibc']}}, the runtime has {{libc}}")

# The driver finds the project's packages as the workers do (they get the pyFiles folders).
sys.path[:0] = [str(Path(__file__).resolve().parent / "{CODE}"), str(Path(__file__).resolve().parent / "{SITE}")]
from {module} import main  # noqa: E402 - after the runtime check

sys.exit(main(sys.argv[1:]))
'''.encode()


def _write(archive: zipfile.ZipFile, name: str, data: bytes, executable: bool) -> None:
    info = zipfile.ZipInfo(name, FIXED_TIME)
    # A jar is a zip already: storing it costs nothing in size and saves compressing 150 MB again.
    info.compress_type = zipfile.ZIP_STORED if name.endswith(".jar") else zipfile.ZIP_DEFLATED
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    info.create_system = 3  # Unix, so the modes above are read back
    archive.writestr(info, data, compresslevel=6)


def required_glibc(wheels: Iterable[Path]) -> str:
    """The newest glibc any wheel needs: per wheel the oldest manylinux tag it carries."""
    needed = (2, 5)
    for wheel in wheels:
        versions = []
        for tag in wheel.stem.split("-")[-1].split("."):
            if tag.startswith("manylinux_"):
                major, minor = tag.split("_")[1:3]
                versions.append((int(major), int(minor)))
            elif tag in ("manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"):
                versions.append({"manylinux2014_x86_64": (2, 17), "manylinux2010_x86_64": (2, 12)}.get(tag, (2, 5)))
        if versions:
            needed = max(needed, min(versions))
    return f"{needed[0]}.{needed[1]}"


def build(target: Target, out_dir: Path, commit: str = "HEAD") -> Path:
    """Build the zip for `target` from `commit`; return its path."""
    sha = git("rev-parse", "--verify", f"{commit}^{{commit}}").decode().strip()
    version = tomllib.loads(git("show", f"{sha}:pyproject.toml").decode())["project"]["version"]
    jar_path = REPO_ROOT / JAR
    if not jar_path.exists():
        raise PackageError(f"{JAR} is missing: run ./medistream setup (mvn package) first")
    bundle, provided = bundle_set(target)
    wheels = fetch_wheels(bundle, target, medistream_home() / "wheelhouse" / f"{target.abi}-{target.platform}")
    files: dict[str, tuple[bytes, bool]] = {}
    for name, data, executable in code_entries(sha):
        files[f"{CODE}/{name}"] = (data, executable)
    if (ca_bundle := rds_ca_bundle(sha)) is not None:
        files[RDS_CA_ENTRY] = (ca_bundle, False)
    for wheel in wheels:
        for name, data, executable in wheel_entries(wheel):
            files[name] = (data, executable)
    files[JAR] = (_normalized_jar_cached(jar_path.read_bytes()), False)
    run_options = job_run_options()
    for job, module in ENTRY_POINTS.items():
        files[f"run_{job}.py"] = (entry_script(job, module), False)
    manifest = {
        "name": "medistream", "version": version, "commit": sha,
        "target": {"python": target.python, "platform": target.platform, "glibc": required_glibc(wheels),
                   "flink": "2.2"},
        "run_options": run_options,
        "wheels": {w.name: hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels},
        "provided_by_runtime": provided,
        "files": {name: hashlib.sha256(data).hexdigest() for name, (data, _x) in sorted(files.items())},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"medistream-{version}+g{sha[:12]}-py{target.python}.zip"
    partial = path.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w") as archive:
        _write(archive, "MANIFEST.json", json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n", False)
        for name, (data, executable) in sorted(files.items()):
            _write(archive, name, data, executable)
    partial.replace(path)
    return path


def job_run_options() -> dict[str, dict[str, str]]:
    """Each job's `kinesis.analytics.flink.run.options`: its entry script, the jar, the code folders."""
    return {job: {"python": f"run_{job}.py", "jarfile": JAR, "pyFiles": f"{CODE}/,{SITE}/"} for job in ENTRY_POINTS}


def application_properties(environment: str, job: str, manifest: Mapping[str, object],
                           base: Mapping[str, Mapping[str, str]] | None = None,
                           values: Mapping[str, str] | None = None) -> list[dict[str, object]]:
    """One application's runtime property groups: conf/ (or `base`) with the environment's overlay and run options.

    `${NAME}` tokens take `values` (facts known at deploy time: account, region, brokers). A token left
    over is refused unless the overlay lists it in `_runtime_tokens` (resolved where the job runs:
    MEDISTREAM_HOME on this machine); Managed Flink has no environment to resolve one from.
    """
    if base is None:
        base_doc = json.loads((REPO_ROOT / "conf" / "application_properties.json").read_text())
        base = {g["PropertyGroupId"]: g["PropertyMap"] for g in base_doc}
    overlay_path = ENVIRONMENTS_DIR / f"{environment}.json"
    if not overlay_path.exists():
        known = sorted(p.stem for p in ENVIRONMENTS_DIR.glob("*.json"))
        raise PackageError(f"no environment {environment!r} under conf/environments/ (one of {known})")
    overlay = json.loads(overlay_path.read_text())
    groups: dict[str, dict[str, str]] = {name: dict(keys) for name, keys in base.items()}
    for group, keys in overlay.items():
        if group.startswith("_"):
            continue
        if keys is None:  # a group this environment's applications do not read
            groups.pop(group, None)
            continue
        merged = groups.setdefault(group, {}) | keys
        groups[group] = {k: str(v) for k, v in merged.items() if v is not None}
    given = dict(values or {})
    groups = {name: {k: PLACEHOLDER.sub(lambda m: given.get(m.group(1), m.group(0)), v) for k, v in keys.items()}
              for name, keys in groups.items()}
    left = sorted({(token, f"{name}.{key}") for name, keys in groups.items() for key, value in keys.items()
                   for token in PLACEHOLDER.findall(value) if token not in overlay.get("_runtime_tokens", [])})
    if left:
        tokens = sorted({token for token, _where in left})
        raise PackageError(f"conf/environments/{environment}.json needs {', '.join(tokens)} (first in {left[0][1]}): "
                           f"pass {' '.join(f'--value {t}=...' for t in tokens)}")
    # Managed Flink refuses an empty property value (its API's values have a minimum length of 1; cfn-lint
    # E3033 on the CDK app's templates): a key left empty (no table suffix, the shipped contracts) is left out,
    # which every loader reads as the same default.
    groups = {name: {k: v for k, v in keys.items() if v != ""} for name, keys in groups.items()}
    run_options: Mapping[str, Mapping[str, str]] = manifest["run_options"]  # type: ignore[assignment]
    groups[RUN_OPTIONS_GROUP] = dict(run_options[job])
    return [{"PropertyGroupId": name, "PropertyMap": keys} for name, keys in sorted(groups.items())]


def parse_values(pairs: Iterable[str]) -> dict[str, str]:
    """`NAME=VALUE` arguments -> {NAME: VALUE}; PackageError on a malformed one."""
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not PLACEHOLDER.fullmatch(f"${{{name}}}") or not value:
            raise PackageError(f"--value {pair!r}: expected NAME=VALUE, NAME in capitals (AWS_REGION=eu-west-1)")
        values[name] = value
    return values


def verify(path: Path) -> dict[str, object]:
    """The manifest of a zip whose contents match it exactly; PackageError naming the first difference."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise PackageError(f"{path}: not a readable zip ({err})") from None
    with archive:
        names = set(archive.namelist())
        if "MANIFEST.json" not in names:
            raise PackageError(f"{path}: no MANIFEST.json: not built by `medistream package`")
        manifest: dict[str, object] = json.loads(archive.read("MANIFEST.json"))
        listed: dict[str, str] = manifest["files"]  # type: ignore[assignment]
        extra, missing = names - set(listed) - {"MANIFEST.json"}, set(listed) - names
        if extra or missing:
            raise PackageError(f"{path}: contents differ from the manifest (extra {sorted(extra)[:3]}, "
                               f"missing {sorted(missing)[:3]})")
        for name, digest in listed.items():
            if hashlib.sha256(archive.read(name)).hexdigest() != digest:
                raise PackageError(f"{path}: {name} does not match its SHA-256 in the manifest")
        if JAR not in listed:
            raise PackageError(f"{path}: {JAR} is missing")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Build the zip, print its path, size, SHA-256 and build time."""
    parser = argparse.ArgumentParser(prog="medistream package", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default="3.12", help="the runtime's Python (Managed Flink 2.2: 3.12)")
    parser.add_argument("--out", default=str(REPO_ROOT / "dist"), help="output folder (default: dist/)")
    parser.add_argument("--commit", default="HEAD", help="the commit to package (default: HEAD)")
    parser.add_argument("--environment", action="append", default=[], metavar="ENV",
                        help="also write each job's runtime properties for conf/environments/ENV.json "
                             "(default: local-cluster)")
    parser.add_argument("--value", action="append", default=[], metavar="NAME=VALUE",
                        help="a deploy-time value for the environment's ${NAME} tokens (account, region, brokers)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    written = []
    try:
        values = parse_values(args.value)
        path = build(Target(args.python), Path(args.out), args.commit)
        manifest = verify(path)
        for environment in args.environment or ["local-cluster"]:
            for job in ENTRY_POINTS:
                target = path.with_name(f"{path.stem}.{environment}.{job}.properties.json")
                groups = application_properties(environment, job, manifest, values=values)
                target.write_text(json.dumps(groups, indent=1) + "\n")
                written.append(str(target))
    except PackageError as err:
        print(f"medistream package: {err}", file=sys.stderr)
        return 2
    if git("status", "--porcelain", "--", *CODE_PACKAGES):
        print("medistream package: note: uncommitted changes under the code packages are not in the zip",
              file=sys.stderr)
    print(json.dumps({"zip": str(path), "bytes": path.stat().st_size,
                      "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                      "files": len(manifest["files"]), "target": manifest["target"],  # type: ignore[arg-type]
                      "properties": written,
                      "build_s": round(time.perf_counter() - started, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
