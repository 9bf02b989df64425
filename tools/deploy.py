"""`medistream deploy --target local dist/<zip>`: run the Managed Flink zip the way Managed Flink runs it.

    ./medistream deploy --target local dist/medistream-<v>-py3.12.zip [--job ingest] [--job partner_delivery]
    ./medistream deploy --target local dist/<zip> --job ingest --savepoint s3://...   # one job from its savepoint
    ./medistream deploy --target local --stop ingest          # stop with savepoint, print its path

The zip is checked first: its signature (`tools.attest.check_for_deploy`: the zip, its SBOMs and its
provenance signed by the local release key; the verdict audited; decision 0031), its contents against
its manifest (`tools.package.verify`: the jar is there) and its target Python against the runtime's; then
unpacked fresh to $MEDISTREAM_HOME/deploy/<zip stem>/ and each
job submitted to `medistream cluster` with the run options of its manifest (`python`, `jarfile`,
`pyFiles`), its generated runtime properties (written into the unpacked folder, passed as
`--properties`) and the cluster's parallelism (2). Nothing of the source tree or of the project's
virtualenv is used: the client and the Python workers run an "MSF-like runtime", a virtualenv of the
zip's target Python holding only what Managed Flink provides (apache-flink), under
$MEDISTREAM_HOME/runtime/py<version>; the cluster must run its workers with it
(`medistream cluster up --python <runtime>`), since a TaskManager's PYTHONPATH is its interpreter's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess  # nosec B404 # -- argv lists only, never a shell
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from connectors.properties import medistream_home, read_property_groups
from infra.local.process import StackError
from tools import cluster, cluster_status, lineage
from tools.attest import check_for_deploy
from tools.cluster_config import ClusterSettings
from tools.minicluster_rest import MiniClusterRest
from tools.package import ENTRY_POINTS, PackageError, application_properties, verify
from tools.signing import SignatureError, SigningSettings

# The runtime `--target local` stands in for: Managed Flink 2.2 runs Python 3.12 and provides PyFlink
# (decision 0016); the patch release is the one the project pins, the jars are the cluster's.
RUNTIME_PYTHON = "3.12"
RUNTIME_PACKAGES = ("apache-flink==2.2.1",)
ENVIRONMENT = "local-cluster"
STEM = re.compile(r"^[A-Za-z0-9._+-]+$")


class DeployError(RuntimeError):
    """The zip or the cluster cannot take this deployment; the message says why."""


def find_python(version: str) -> Path:
    """An interpreter of that version: python<version> on PATH, else pyenv's; DeployError if none."""
    found = shutil.which(f"python{version}")
    candidates = [Path(found)] if found else []
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(pyenv_root.glob(f"versions/{version}.*/bin/python{version}"), reverse=True)
    for candidate in candidates:
        # B603 - a Python found on PATH or under pyenv, fixed script
        probe = subprocess.run([str(candidate), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],  # noqa: S603
                               capture_output=True, text=True, timeout=30, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    raise DeployError(f"no Python {version} on this machine (python{version} on PATH or under pyenv): install it, "
                      f"e.g. `pyenv install {version}`")


def runtime_dir(version: str = RUNTIME_PYTHON) -> Path:
    """Where the MSF-like runtime of one Python version lives."""
    return medistream_home() / "runtime" / f"py{version}"


def ensure_runtime(version: str = RUNTIME_PYTHON) -> Path:
    """The python of a virtualenv holding only RUNTIME_PACKAGES for `version`; created once, then reused."""
    folder = runtime_dir(version)
    marker = folder / "medistream-runtime.json"
    wanted = {"python": version, "packages": list(RUNTIME_PACKAGES)}
    if marker.exists() and json.loads(marker.read_text()) == wanted and _runtime_complete(folder / "bin" / "python"):
        return folder / "bin" / "python"
    base = find_python(version)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    # B603 - that Python making a virtualenv in our folder, fixed argv
    subprocess.run([str(base), "-m", "venv", str(partial)], check=True, timeout=300, env=_clean_env())  # noqa: S603
    # B603 - the runtime's pip installing the pinned RUNTIME_PACKAGES
    done = subprocess.run([str(partial / "bin" / "python"), "-m", "pip", "install", "--quiet",  # noqa: S603
                           "--disable-pip-version-check", *RUNTIME_PACKAGES],
                          capture_output=True, text=True, timeout=1800, check=False, env=_clean_env())
    if done.returncode or not _runtime_complete(partial / "bin" / "python"):
        raise DeployError(f"could not install {' '.join(RUNTIME_PACKAGES)} for Python {version}: "
                          f"{done.stderr.strip()[-600:] or 'installed, but PyFlink does not import'}")
    (partial / "medistream-runtime.json").write_text(json.dumps(wanted))
    shutil.rmtree(folder, ignore_errors=True)
    # A virtualenv finds its prefix from pyvenv.cfg beside bin/python, so it survives the rename.
    partial.rename(folder)
    return folder / "bin" / "python"


def _clean_env() -> dict[str, str]:
    """This process's environment without what points Python at other packages.

    A PYTHONPATH naming the project's 3.11 venv (the jobs set one for their own workers) made pip in
    the runtime see apache-flink as installed and install nothing, leaving a runtime without PyFlink's
    dependencies ("No module named 'dateutil'" at submission).
    """
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_TARGET", "PIP_PREFIX")}


def _runtime_complete(python: Path) -> bool:
    """Whether the runtime imports PyFlink and its dependencies from its own site-packages."""
    if not python.exists():
        return False
    probe = ("import dateutil, pyflink, sys; "
             "assert 'site-packages' in pyflink.__file__ and sys.prefix != sys.base_prefix")
    # B603 - the runtime's python with a fixed probe script
    done = subprocess.run([str(python), "-c", probe], capture_output=True, timeout=120, check=False,  # noqa: S603
                          env=_clean_env())
    return done.returncode == 0


def check_signed(path: Path, doing: str, audit: Any = None, signing: SigningSettings | None = None) -> None:
    """The zip, its SBOMs and provenance are signed by the local release key (audited); DeployError if not."""
    from botocore.exceptions import BotoCoreError, ClientError

    from connectors.audit import AuditError

    try:
        check_for_deploy(path, f"the local cluster ({doing})", signing or SigningSettings.for_environment("local"),
                         audit=audit)
    except SignatureError as err:
        raise DeployError(f"refused, nothing submitted: {err}") from None
    except (BotoCoreError, ClientError, AuditError) as err:  # no record of the verdict, no deploy
        raise DeployError(f"the signature verdict could not be audited, nothing submitted: {err}") from None


def check_zip(path: Path, runtime_python: str = RUNTIME_PYTHON) -> dict[str, Any]:
    """The manifest of a zip this runtime can run; DeployError naming what is wrong otherwise."""
    try:
        manifest = verify(path)
    except PackageError as err:
        raise DeployError(str(err)) from None
    except (OSError, zipfile.BadZipFile) as err:  # a damaged entry, found while hashing it
        raise DeployError(f"{path}: not a readable zip ({err})") from None
    target: Mapping[str, str] = manifest["target"]  # type: ignore[assignment]
    if target.get("python") != runtime_python:
        raise DeployError(f"{path.name} is built for Python {target.get('python')}, the runtime runs Python "
                          f"{runtime_python}: rebuild it with `medistream package --python {runtime_python}`")
    return manifest


def unpack(path: Path, purpose: str = "") -> Path:
    """Unpack the zip, fresh, to $MEDISTREAM_HOME/deploy/<zip stem>[.<purpose>]/ (what Managed Flink's
    application root is)."""
    if not STEM.match(path.stem):
        raise DeployError(f"{path.name}: unexpected characters in the zip's name")
    root = medistream_home() / "deploy" / (f"{path.stem}.{purpose}" if purpose else path.stem)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            # verify() matched every name against the manifest; still, nothing may land outside the folder.
            target = (partial / info.filename).resolve()
            if not target.is_relative_to(partial.resolve()):
                raise DeployError(f"{path.name}: entry {info.filename!r} points outside the application folder")
            archive.extract(info, partial)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode)
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return root


def job_properties(job: str, manifest: Mapping[str, Any], base: Path | None) -> list[dict[str, Any]]:
    """The application's property groups: `base` (default conf/) + the local-cluster overlay + run options."""
    groups = application_properties(ENVIRONMENT, job, manifest,
                                    base=read_property_groups(base) if base is not None else None)
    # ${MEDISTREAM_HOME} means this machine's home, not the unpacked application's folder.
    home = str(medistream_home())
    resolved = []
    for group in groups:
        values: Mapping[str, str] = group["PropertyMap"]  # type: ignore[assignment]  # str -> str by construction
        resolved.append({"PropertyGroupId": group["PropertyGroupId"],
                         "PropertyMap": {k: v.replace("${MEDISTREAM_HOME}", home) for k, v in values.items()}})
    return resolved


def cluster_python(settings: ClusterSettings) -> str | None:
    """The python.executable the running cluster was started with (its generated config.yaml)."""
    conf = settings.conf_dir / "config.yaml"
    if not conf.exists():
        return None
    return (yaml.safe_load(conf.read_text()) or {}).get("python.executable")


def check_cluster(settings: ClusterSettings, python: Path) -> None:
    """The cluster is up with every process, and runs its Python workers with the runtime's interpreter."""
    alive = cluster.running(settings)
    if any(proc is None for proc in alive.values()):
        down = sorted(name for name, proc in alive.items() if proc is None)
        raise DeployError(f"the local cluster is not up ({', '.join(down)} not running): run "
                          f"`medistream cluster up --python {python}`")
    configured = cluster_python(settings)
    if configured != str(python):
        raise DeployError(f"the local cluster runs Python workers with {configured}, not the runtime {python}: "
                          f"restart it with `medistream cluster down && medistream cluster up --python {python}`")


def deploy(path: Path, jobs: Sequence[str] = ("ingest",), settings: ClusterSettings | None = None,
           base_properties: Path | None = None, savepoints: Mapping[str, str] | None = None,
           parallelism: int | None = None, runtime_python: str = RUNTIME_PYTHON,
           allow_non_restored_state: bool = False, audit: Any = None) -> dict[str, Any]:
    """Check, unpack and submit the zip's jobs, each from its savepoint if given; {job: job id} plus where
    and how long. `allow_non_restored_state` drops savepoint state the new job graph has no place for.
    The signature check comes first and is audited (`audit`: the log to write, default the configured one)."""
    started = time.monotonic()
    settings = settings or ClusterSettings.from_env()
    savepoints = dict(savepoints or {})
    unknown = sorted((set(jobs) | set(savepoints)) - set(ENTRY_POINTS))
    if unknown:
        raise DeployError(f"no job {unknown[0]!r} in the zip (one of {sorted(ENTRY_POINTS)})")
    stray = sorted(set(savepoints) - set(jobs))
    if stray:
        raise DeployError(f"a savepoint is given for {stray[0]!r}, which is not among the jobs to deploy")
    check_signed(path, f"deploy {', '.join(jobs)}", audit)
    manifest = check_zip(path, runtime_python)
    python = ensure_runtime(runtime_python)
    check_cluster(settings, python)
    # The client's environment too: its PYTHONPATH is the runtime's site-packages, not the project venv's.
    settings = dataclasses.replace(settings, python_executable=str(python))
    root = unpack(path)
    submitted = {}
    for job in jobs:
        py, pyfiles, jars, args = client_program(root, manifest, job, python, base_properties)
        restore = ["--fromSavepoint", savepoints[job]] if job in savepoints else []
        if restore and allow_non_restored_state:
            restore.append("--allowNonRestoredState")
        job_id = cluster.submit(settings, py, pyfiles, jars, parallelism or 2, args,
                                flink_options=runtime_options(python) + restore,
                                env={"MEDISTREAM_HOME": str(medistream_home())})
        submitted[job] = job_id
        record_deployment(job, job_id, path, base_properties, settings)
        lineage.emit("START", job, base_properties, lineage.run_id(job_id), zip=path.name,
                     savepoint=savepoints.get(job))
    return {"jobs": submitted, "application": str(root), "runtime": str(python),
            "deploy_s": round(time.monotonic() - started, 1)}


def runtime_options(python: Path) -> list[str]:
    """`flink run` options that run the entry script and the Python workers with the runtime."""
    return ["-pyexec", str(python), "-pyclientexec", str(python)]


def client_program(root: Path, manifest: Mapping[str, Any], job: str, python: Path, base_properties: Path | None,
                   extra_args: Sequence[str] = ()) -> tuple[Path, list[str], list[str], list[str]]:
    """What `flink run` takes for one job of an unpacked zip: its entry script, pyFiles and jar (the run
    options of its manifest), and its arguments (its generated properties, written beside it)."""
    options: Mapping[str, str] = manifest["run_options"][job]
    properties = root / f"application_properties.{job}.json"
    properties.write_text(json.dumps(job_properties(job, manifest, base_properties), indent=1) + "\n")
    pyfiles = [str(root / entry.rstrip("/")) for entry in options["pyFiles"].split(",") if entry]
    return (root / options["python"], pyfiles, [str(root / options["jarfile"])],
            ["--properties", str(properties), *extra_args])


def operator_ids(path: Path, job: str, settings: ClusterSettings | None = None, base_properties: Path | None = None,
                 runtime_python: str = RUNTIME_PYTHON, parallelism: int = 2, signing: SigningSettings | None = None
                 ) -> dict[str, Any]:
    """The operator ids of a job of the zip, as the cluster would run it: its client built by `flink run`
    with the runtime and the zip's jar, asked for its ids (`--operator-ids FILE`) instead of a submission.
    No cluster needs to be up: the client contacts the JobManager only to submit. The zip's code runs here, so
    its signature is checked first, as for a deploy."""
    check_signed(path, f"read the operator ids of {job}", signing=signing)
    manifest = check_zip(path, runtime_python)
    if job not in manifest["run_options"]:
        raise DeployError(f"no job {job!r} in {path.name}")
    python = ensure_runtime(runtime_python)
    settings = dataclasses.replace(settings or ClusterSettings.from_env(), python_executable=str(python))
    if not (settings.conf_dir / "config.yaml").exists():
        cluster.write_conf_dir(settings, cluster.s3_config())
    root = unpack(path, "describe")
    out = root / f"operator-ids.{job}.json"
    py, pyfiles, jars, args = client_program(root, manifest, job, python, base_properties,
                                             ["--operator-ids", str(out)])
    result = cluster.flink_run(settings, py, pyfiles, jars, parallelism, args, flink_options=runtime_options(python),
                               env={"MEDISTREAM_HOME": str(medistream_home())})
    if not out.exists():
        raise DeployError(f"building {job} of {path.name} for its operator ids failed (flink run exited "
                          f"{result.returncode}): {cluster_status.root_cause(result.stdout + result.stderr)}")
    found: dict[str, Any] = json.loads(out.read_text())
    shutil.rmtree(root, ignore_errors=True)
    return found


def registry(settings: ClusterSettings) -> Path:
    """The last job id deployed per job name on one cluster (in its home: a job is known on the cluster it
    runs on, and a test's private cluster never shows in the default one's), for `--stop <job>`."""
    return settings.home / "deployed.json"


def _known(settings: ClusterSettings) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(registry(settings).read_text()) if registry(settings).exists() else {}
    return found


def record_deployment(job: str, job_id: str, path: Path, base_properties: Path | None,
                      settings: ClusterSettings) -> None:
    """Remember the latest deployment of `job` on the cluster: its job id, zip and base properties (a restart
    or an upgrade runs with the same ones: table names, for one, are part of some operators' ids)."""
    known = _known(settings)
    known[job] = {"job_id": job_id, "zip": str(path.resolve()),
                  "properties": str(base_properties.resolve()) if base_properties else None}
    registry(settings).parent.mkdir(parents=True, exist_ok=True)
    registry(settings).write_text(json.dumps(known, indent=1) + "\n")


def deployed_job(job_id: str, settings: ClusterSettings) -> tuple[str, Path | None] | None:
    """(job name, base properties) of a job id the cluster's registry recorded, or None."""
    for name, entry in _known(settings).items():
        if entry.get("job_id") == job_id:
            return name, Path(entry["properties"]) if entry.get("properties") else None
    return None


def resolve_job(name_or_id: str, settings: ClusterSettings) -> str:
    """A job id as given, or the one last deployed on the cluster under that job name."""
    if re.fullmatch(r"[0-9a-f]{32}", name_or_id):
        return name_or_id
    known = _known(settings)
    if name_or_id not in known:
        raise DeployError(f"no deployed job {name_or_id!r} (deployed: {sorted(known)}); give a job id instead")
    return str(known[name_or_id]["job_id"])


def rest_post(settings: ClusterSettings, path: str, body: Mapping[str, Any]) -> Any:
    """POST JSON to the cluster's REST API; DeployError naming the path and the answer."""
    request = urllib.request.Request(settings.rest_url() + path, data=json.dumps(body).encode(),  # noqa: S310
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback REST
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        raise DeployError(f"POST {path}: HTTP {err.code} {err.read().decode(errors='replace')[:300]}") from None
    except OSError as err:
        raise DeployError(f"the cluster's REST API at {settings.rest_url()} does not answer: {err}") from None


def stop(name_or_id: str, settings: ClusterSettings | None = None, timeout_s: float = 180.0,
         target_directory: str | None = None) -> dict[str, Any]:
    """Stop a job with a savepoint through the REST API (into the cluster's savepoint folder unless
    `target_directory` says otherwise); the savepoint's path."""
    settings = settings or ClusterSettings.from_env()
    job_id = resolve_job(name_or_id, settings)
    body: dict[str, Any] = {"drain": False, "formatType": "CANONICAL"}
    if target_directory:
        body["targetDirectory"] = target_directory
    deployed = deployed_job(job_id, settings)
    quality = {} if deployed is None else lineage.run_quality(  # read while it runs: a finished job's are gone
        deployed[1], lambda: MiniClusterRest(settings.rest_port, job_id))
    location = savepoint(settings, job_id, "stop", body, timeout_s)
    state = cluster_status.wait_for_job(settings, job_id, {"FINISHED"}, 60)
    if deployed is not None:
        lineage.emit("COMPLETE", deployed[0], deployed[1], lineage.run_id(job_id), savepoint=location,
                     quality=quality)
    return {"job_id": job_id, "savepoint": location, "state": state}


def savepoint(settings: ClusterSettings, job_id: str, how: str, body: Mapping[str, Any], timeout_s: float = 180.0
              ) -> str:
    """Trigger a savepoint through the REST API (`how`: "savepoints", the job runs on; "stop", it stops after)
    and wait for it; its path, DeployError with Flink's root cause if it fails."""
    what = "stop-with-savepoint" if how == "stop" else "savepoint"
    trigger = rest_post(settings, f"/jobs/{job_id}/{how}", body)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = cluster_status.rest_get(settings, f"/jobs/{job_id}/savepoints/{trigger['request-id']}") or {}
        if found.get("status", {}).get("id") == "COMPLETED":
            operation = found.get("operation", {})
            if "location" not in operation:
                raise DeployError(f"{what} of {job_id} failed: "
                                  f"{cluster_status.root_cause(str(operation.get('failure-cause', operation)))}")
            return str(operation["location"])
        time.sleep(1)
    raise DeployError(f"{what} of {job_id} did not complete within {timeout_s:.0f}s")


def main(argv: list[str] | None = None) -> int:
    """`medistream deploy --target local ZIP [--job J] [--savepoint P]` or `--stop JOB`; JSON on stdout."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["stop"]:
        argv = ["--target", "local", "--stop", *argv[1:]]
    parser = argparse.ArgumentParser(prog="medistream deploy", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--target", choices=["local"], required=True, help="where to run it: the local cluster")
    parser.add_argument("zip", nargs="?", type=Path, help="the zip `medistream package` built")
    parser.add_argument("--job", action="append", choices=sorted(ENTRY_POINTS), help="job to run (default: ingest)")
    parser.add_argument("--savepoint", help="start the (one) job from this savepoint (s3://...)")
    parser.add_argument("--properties", type=Path, help="base properties instead of conf/application_properties.json")
    parser.add_argument("-p", "--parallelism", type=int, default=None, help="default: the cluster's (2)")
    parser.add_argument("--stop", metavar="JOB", help="stop a deployed job (name or id) with a savepoint")
    args = parser.parse_args(argv)
    try:
        if args.stop:
            result = stop(args.stop)
        elif args.zip is None:
            parser.error("give the zip to deploy, or --stop JOB")
        else:
            jobs = args.job or ["ingest"]
            if args.savepoint and len(jobs) != 1:
                parser.error("--savepoint restores one job: give exactly one --job with it")
            result = deploy(args.zip, jobs, base_properties=args.properties,
                            savepoints={jobs[0]: args.savepoint} if args.savepoint else None,
                            parallelism=args.parallelism)
    except DeployError as err:
        print(f"medistream deploy: {err}", file=sys.stderr)
        return 2
    except StackError as err:  # flink run's own output: several lines, the cause among them
        print(f"medistream deploy: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
