"""`medistream cluster up|down|status`: a standalone Flink cluster from the apache-flink wheel's own scripts.

One JobManager and N TaskManagers (two by default), each a separate JVM started with the
distribution's `jobmanager.sh` / `taskmanager.sh start-foreground` (which exec the JVM, so the PID
we record is the JVM's) in its own session, recorded under <home>/cluster/run. `up` is idempotent
and tops up missing TaskManagers; `down` stops every process by PID (SIGTERM, then SIGKILL) together
with whatever is left of its session (Python workers). Configuration: tools/cluster_config.py.
`python -m tools.cluster submit --py job.py` submits a PyFlink job with the distribution's `flink run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess  # nosec B404 # -- argv lists only, never a shell
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import psutil

from connectors.metrics.flink_reporter import plugins_root
from connectors.properties import PropertyGroup, S3Config, default_properties_path, read_property_groups
from infra.local import process
from infra.local.process import HealthTimeout, StackError
from tools import cluster_status
from tools.cluster_config import (
    S3_PLUGIN,
    SYSTEM_JARS,
    ClusterSettings,
    config_yaml,
    distribution_java_opts,
    flink_config,
    flink_home,
)

# How long `down` waits for the SIGKILLed rest of a process's session (its Python workers) to be gone.
SWEEP_WAIT_S = 10.0
TASKMANAGER_RESTARTS = 1  # per TaskManager and `up`: one that exits again is broken, not collateral


def s3_config() -> S3Config:
    """The `s3` property group of the local properties: where checkpoints and savepoints go."""
    group = PropertyGroup(read_property_groups(default_properties_path()), "s3")
    return S3Config(endpoint=group.str("endpoint", ""), region=group.str("region"),
                    path_style_access=group.bool("path.style.access", False))


def pid_file(settings: ClusterSettings, name: str) -> Path:
    """Our PID file of one process ('jobmanager', 'tm1', ...)."""
    return settings.run_dir / f"{name}.pid"


def console_log(settings: ClusterSettings, name: str) -> Path:
    """What the process wrote to stdout/stderr (start-up errors before Flink's own log exists)."""
    return settings.log_dir / f"{name}.console.log"


def write_conf_dir(settings: ClusterSettings, s3: S3Config) -> None:
    """Generate config.yaml, copy the distribution's log settings, link the plugins the cluster loads."""
    dist = flink_home()
    for folder in (settings.conf_dir, settings.run_dir, settings.log_dir, settings.tmp_dir, settings.plugins_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for name in ("log4j-console.properties", "log4j.properties", "log4j-cli.properties", "logback-console.xml"):
        shutil.copyfile(dist / "conf" / name, settings.conf_dir / name)
    opts = distribution_java_opts(dist / "conf" / "config.yaml")
    (settings.conf_dir / "config.yaml").write_text(config_yaml(flink_config(settings, s3), opts))
    if not (S3_PLUGIN.is_dir() and any(S3_PLUGIN.glob("*.jar"))):
        raise StackError(f"the S3 filesystem plugin is missing under {S3_PLUGIN}: run ./medistream setup first")
    stale = settings.plugins_dir / "metrics-prometheus"  # Flink's own reporter, on every interface: not loaded
    if stale.is_symlink():
        stale.unlink()
    plugins_root({"s3-fs-hadoop": S3_PLUGIN}, root=settings.plugins_dir)


def process_environment(settings: ClusterSettings) -> dict[str, str]:
    """The environment of every cluster process and of `flink run`: our conf, plugins, class path, logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLINK_", "PYFLINK_"))}
    env |= {
        # Jobs bring their own code (-pyfs, the zip); the source tree is not on the path. The interpreter's
        # site-packages is, for the thread-mode interpreter embedded in the TaskManager JVM: it does not
        # find a virtualenv's packages (pemja, pyflink) by itself.
        "PYTHONPATH": site_packages(settings.python_executable),
        "FLINK_CONF_DIR": str(settings.conf_dir),
        "FLINK_PLUGINS_DIR": str(settings.plugins_dir),
        "FLINK_LOG_DIR": str(settings.log_dir),
        "FLINK_PID_DIR": str(settings.run_dir),
        # Flink's HadoopUtils and java.sql.DriverManager live on the system class path (jobs/runtime.py).
        # So does flink-python (the wheel keeps it in opt/): thread mode's pemja loads libpython once per
        # JVM, and from a job's own class loader a job's second attempt on a TaskManager failed with
        # "java.lang.NoSuchFieldException: loadedLibraryNames" (pemja.utils.CommonUtils.loadLibrary).
        "HADOOP_CLASSPATH": os.pathsep.join([str(SYSTEM_JARS / "*"), *map(str, flink_python_jars())]),
        "TMPDIR": str(settings.tmp_dir),
        # The local S3 API takes any key; placeholders keep the SDK from looking for real ones.
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
    }
    return env


def flink_python_jars() -> list[Path]:
    """The distribution's flink-python jar (opt/), for the cluster's system class path."""
    return sorted((flink_home() / "opt").glob("flink-python-*.jar"))


def site_packages(python: str) -> str:
    """The purelib folder of an interpreter (its virtualenv's site-packages)."""
    # B603 - the configured interpreter with a fixed script
    found = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],  # noqa: S603
                           capture_output=True, text=True, timeout=30, check=True)
    return found.stdout.strip()


def _start(settings: ClusterSettings, name: str) -> psutil.Process:
    dist_bin = flink_home() / "bin"
    if name == "jobmanager":
        marker = "medistream.process=jobmanager"
        argv = ["bash", str(dist_bin / "jobmanager.sh"), "start-foreground", "-D", marker]
    else:
        # A resource id unique per launch: a replacement never meets its dead predecessor's registration.
        marker = f"medistream-{name}-{uuid.uuid4().hex[:8]}"
        argv = ["bash", str(dist_bin / "taskmanager.sh"), "start-foreground", "-D", f"taskmanager.resource-id={marker}"]
    env = process_environment(settings) | {"FLINK_IDENT_STRING": f"medistream-{name}"}
    return process.launch(argv, log_file=console_log(settings, name), pid_file=pid_file(settings, name),
                          marker=marker, cwd=settings.home, env=env)


def _sweep_session(record: process.PidRecord | None) -> list[int]:
    """SIGKILL what is left of a process's session (its Python workers), once the process is gone."""
    if record is None:
        return []
    try:
        reused = (process.start_ticks(record.pid) != record.start_ticks if record.start_ticks is not None
                  else abs(psutil.Process(record.pid).create_time() - record.create_time) >= 1.0)
    except psutil.NoSuchProcess:
        reused = False
    if reused:
        # Its PID was given to another process. Linux hands out no PID that is still a session's id, so that
        # session is gone, and every process with the id now belongs to the newcomer's session: none is ours.
        return []
    killed: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            started_after = (process.start_ticks(proc.pid) >= record.start_ticks if record.start_ticks is not None
                             else proc.info["create_time"] >= record.create_time - 1)
            if os.getsid(proc.pid) == record.pid and started_after:
                proc.kill()
                killed.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    # A SIGKILL is delivered, not yet done: wait (bounded) until each is gone or only a zombie waiting for its parent
    # to reap it, so a caller that looks right after `down` finds nothing of the cluster still running.
    deadline = time.monotonic() + SWEEP_WAIT_S
    while time.monotonic() < deadline and any(_still_running(proc) for proc in killed):
        time.sleep(0.05)
    return [proc.pid for proc in killed]


def _still_running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (an exited process whose parent has not collected its status yet)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def running(settings: ClusterSettings) -> dict[str, psutil.Process | None]:
    """Each process of the cluster -> its live process if ours, else None."""
    return {name: process.owned_process(pid_file(settings, name)) for name in settings.processes()}


def up(settings: ClusterSettings | None = None) -> dict[str, Any]:
    """Start what is missing (JobManager, TaskManagers), wait for every slot; the status when up."""
    settings = settings or ClusterSettings.from_env()
    s3 = s3_config()
    alive = running(settings)
    missing = [name for name, proc in alive.items() if proc is None]
    if not missing:
        return status(settings)
    if "jobmanager" in missing:
        # Every check that can fail runs before anything starts.
        for component, (port, setting) in settings.ports().items():
            process.ensure_port_free(port, f"flink {component}", setting)
    endpoint = urllib.parse.urlparse(s3.endpoint)
    if endpoint.port and not process.port_accepts(endpoint.port):
        raise StackError(f"the local S3 API at {s3.endpoint} does not answer: run ./medistream stack up first")
    if "jobmanager" in missing:
        write_conf_dir(settings, s3)
    started: list[str] = []
    launched = time.monotonic()
    try:
        for name in missing:
            _sweep_session(process.read_pid(pid_file(settings, name)))
            _start(settings, name)
            started.append(name)
        waited = _wait_registered(settings, started)
    except BaseException:
        for name in started:
            _stop_one(settings, name, term_timeout_s=10.0)
        raise
    result = status(settings)
    result["started"] = started
    result["started_in_s"] = round(max(waited, time.monotonic() - launched), 1)
    return result


def _wait_registered(settings: ClusterSettings, started: list[str]) -> float:
    """Wait until every TaskManager we started is registered and all slots are there; seconds taken.

    A TaskManager that exits meanwhile is started again (and added to `started`), up to TASKMANAGER_RESTARTS times:
    one can be taken down by another's SIGKILL (README, Known limits: Beam's clean-up in a process-mode task fails,
    and Flink treats that as fatal), and `up` is what an operator runs to get the cluster whole again. The JobManager
    exiting, or a TaskManager exiting once more, is an error naming their last log lines.
    """
    start = time.monotonic()
    restarts: dict[str, int] = {}
    while True:
        dead = [name for name in settings.processes() if process.owned_process(pid_file(settings, name)) is None]
        broken = [name for name in dead if name == "jobmanager" or restarts.get(name, 0) >= TASKMANAGER_RESTARTS]
        if broken:
            logs = "\n".join(f"--- {name}:\n{process.tail(console_log(settings, name), 20)}" for name in broken)
            raise HealthTimeout(f"flink {', '.join(broken)} exited while starting; last lines:\n{logs}")
        for name in dead:
            restarts[name] = restarts.get(name, 0) + 1
            _sweep_session(process.read_pid(pid_file(settings, name)))
            _start(settings, name)
            if name not in started:
                started.append(name)
        ours = {process.read_pid(pid_file(settings, n)).marker  # type: ignore[union-attr]
                for n in settings.processes() if n != "jobmanager"}
        registered = cluster_status.taskmanager_ids(settings)
        overview = cluster_status.rest_get(settings, "/overview") if registered is not None else None
        if registered is not None and ours <= registered and overview is not None and \
                overview.get("slots-total", 0) >= settings.taskmanagers * settings.slots_per_taskmanager:
            return time.monotonic() - start
        if time.monotonic() - start > settings.start_timeout_s:
            raise HealthTimeout(f"flink cluster: TaskManagers {sorted(ours)} not all registered after "
                                f"{settings.start_timeout_s:.0f}s; see {settings.log_dir}")
        time.sleep(0.5)


def _stop_one(settings: ClusterSettings, name: str, term_timeout_s: float) -> int | None:
    record = process.read_pid(pid_file(settings, name))
    stopped = process.stop(pid_file(settings, name), term_timeout_s=term_timeout_s)
    _sweep_session(record)
    return stopped


def down(settings: ClusterSettings | None = None, term_timeout_s: float = 20.0) -> dict[str, int | None]:
    """Stop the TaskManagers, then the JobManager, by PID (SIGTERM, SIGKILL after term_timeout_s)."""
    settings = settings or ClusterSettings.from_env()
    names = [n for n in settings.processes() if n != "jobmanager"] + ["jobmanager"]
    return {name: _stop_one(settings, name, term_timeout_s) for name in names}


def status(settings: ClusterSettings | None = None) -> dict[str, Any]:
    """Processes, TaskManagers, slots and jobs (with a failed job's root cause), as a JSON-friendly dict."""
    settings = settings or ClusterSettings.from_env()
    procs = {}
    for name, proc in running(settings).items():
        rss = None
        if proc is not None:
            try:
                rss = round(proc.memory_info().rss / 2**20)
            except psutil.Error:
                rss = None
        procs[name] = {"pid": proc.pid if proc else None, "alive": proc is not None, "rss_mib": rss}
    return {"rest": settings.rest_url(), "home": str(settings.home), "processes": procs,
            **cluster_status.cluster_view(settings)}


def flink_run(settings: ClusterSettings, py: Path, pyfiles: list[str], jarfiles: list[str], parallelism: int,
              args: list[str] | None = None, timeout_s: float = 300.0, flink_options: list[str] | None = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a PyFlink program with the distribution's `flink run -py` (detached): the client side of a
    submission, with the cluster's configuration, jars and Python. `flink_options` go to `flink run`
    before the program (e.g. -pyexec, --fromSavepoint), `args` to the program."""
    argv = ["bash", str(flink_home() / "bin" / "flink"), "run", "--detached", "-p", str(parallelism),
            *(flink_options or []), "-py", str(py)]
    if pyfiles:
        argv += ["-pyfs", ",".join(pyfiles)]
    for jar in jarfiles:
        argv += ["--jarfile", jar]
    argv += args or []
    # B603 - Flink's own scripts from the PyFlink wheel, argv list, no shell
    return subprocess.run(argv, env=process_environment(settings) | (env or {}), capture_output=True, text=True,  # noqa: S603
                          timeout=timeout_s, cwd=py.parent, check=False)


def submit(settings: ClusterSettings, py: Path, pyfiles: list[str], jarfiles: list[str], parallelism: int,
           args: list[str] | None = None, timeout_s: float = 300.0, flink_options: list[str] | None = None,
           env: dict[str, str] | None = None) -> str:
    """Submit a PyFlink job (flink_run); returns its job id, StackError with flink's output if none."""
    result = flink_run(settings, py, pyfiles, jarfiles, parallelism, args, timeout_s, flink_options, env)
    found = re.search(r"JobID ([0-9a-f]{32})", result.stdout + result.stderr)
    if result.returncode != 0 or not found:
        raise StackError(f"flink run exited {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}")
    return found.group(1)


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.cluster up|down|status|submit ...` (the first three are `medistream cluster`)."""
    root = argparse.ArgumentParser(prog="medistream cluster", description=__doc__.split("\n", 1)[0])
    sub = root.add_subparsers(dest="action", required=True)
    starting = sub.add_parser("up")
    starting.add_argument("--python", help="interpreter of the Python workers (default: $MEDISTREAM_FLINK_PYTHON, "
                          "else this one); `medistream deploy` needs its runtime's")
    for action in ("down", "status"):
        sub.add_parser(action)
    run = sub.add_parser("submit", help="submit a PyFlink job (flink run -py, detached); prints its job id")
    run.add_argument("--py", required=True, type=Path)
    run.add_argument("--pyfiles", nargs="*", default=[])
    run.add_argument("--jarfile", action="append", default=[])
    run.add_argument("--parallelism", type=int, default=2)
    run.add_argument("job_args", nargs=argparse.REMAINDER, help="after --: arguments of the job")
    args = root.parse_args(argv)
    settings = ClusterSettings.from_env()
    if getattr(args, "python", None):
        settings = dataclasses.replace(settings, python_executable=str(Path(args.python).absolute()))
    try:
        if args.action == "up":
            result: Any = up(settings)
        elif args.action == "down":
            result = {"stopped": down(settings)}
        elif args.action == "status":
            result = status(settings)
        else:
            job_args = args.job_args[1:] if args.job_args[:1] == ["--"] else args.job_args
            result = {"job_id": submit(settings, args.py.resolve(), args.pyfiles, args.jarfile, args.parallelism,
                                       job_args)}
    except StackError as err:
        print(f"medistream cluster: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
