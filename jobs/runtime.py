"""Flink runtime wiring shared by every job: jars, plugins, checkpoints, restore and stop.

What this encodes was measured on PyFlink 2.2 (docs/decisions/0001-flink-version.md):
- pyflink resets FLINK_PLUGINS_DIR unless FLINK_HOME is set, and the mini-cluster only finds the
  S3 filesystem when plugins are initialised explicitly;
- Flink's own HadoopUtils and java.sql.DriverManager live on the system class path, so Hadoop and
  the SQLite JDBC driver go on HADOOP_CLASSPATH rather than in the job jar;
- the embedded (thread-mode) interpreter does not see a virtualenv's site-packages by itself.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.properties import (
    CheckpointConfig,
    ConfigError,
    RuntimeConfig,
    S3Config,
    medistream_home,
)

if TYPE_CHECKING:
    from pyflink.common import Configuration, JobClient

REPO_ROOT = Path(__file__).resolve().parent.parent
LIB_DIR = REPO_ROOT / "lib"
DEPENDENCIES_JAR = LIB_DIR / "pyflink-dependencies.jar"


def prepare_process_environment() -> None:
    """Set the variables the PyFlink gateway reads; call before the first pyflink JVM starts."""
    if not DEPENDENCIES_JAR.exists():
        raise ConfigError(f"{DEPENDENCIES_JAR} is missing: run ./medistream setup (mvn package) first")
    import pyflink

    site_packages = sysconfig.get_paths()["purelib"]
    os.environ.setdefault("FLINK_HOME", str(Path(pyflink.__file__).parent))
    os.environ["FLINK_PLUGINS_DIR"] = str(LIB_DIR / "plugins")
    os.environ["HADOOP_CLASSPATH"] = str(LIB_DIR / "system" / "*")
    paths = [str(REPO_ROOT), site_packages, os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


def flink_configuration(
    checkpoints: CheckpointConfig, runtime: RuntimeConfig, s3: S3Config, restore_from: str | None
) -> Configuration:
    """Cluster and job configuration: exactly-once checkpoints, bounded restarts, S3 access."""
    from pyflink.common import Configuration

    home = medistream_home()
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    conf = Configuration()
    settings = {
        "pipeline.jars": DEPENDENCIES_JAR.as_uri(),
        "python.execution-mode": runtime.python_execution_mode,
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "parallelism.default": str(runtime.parallelism),
        "execution.checkpointing.interval": f"{checkpoints.interval_ms} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.timeout": f"{checkpoints.timeout_ms} ms",
        "execution.checkpointing.dir": checkpoints.directory,
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "execution.checkpointing.tolerable-failed-checkpoints": "3",
        # Bounded restarts: a broken job must fail where the operator can see it, not loop.
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.attempts-before-reset-backoff": "5",
        "restart-strategy.exponential-delay.max-backoff": "30 s",
        "state.backend.type": "hashmap",
        "io.tmp.dirs": str(tmp),
        "taskmanager.memory.process.size": "1600m",
        "rest.bind-address": "127.0.0.1",
        "rest.address": "127.0.0.1",
        "table.exec.source.idle-timeout": "5 s",
    }
    if s3.endpoint:
        settings |= {"s3.endpoint": s3.endpoint, "s3.path.style.access": str(s3.path_style_access).lower()}
    if restore_from:
        settings["execution.savepoint.path"] = restore_from
    for key, value in settings.items():
        conf.set_string(key, value)
    return conf


def initialize_filesystems(conf: Configuration) -> None:
    """Load filesystem plugins (S3) into the client JVM, which hosts the local mini-cluster."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    plugins = jvm.org.apache.flink.core.plugin.PluginUtils.createPluginManagerFromRootFolder(conf._j_configuration)
    jvm.org.apache.flink.core.fs.FileSystem.initialize(conf._j_configuration, plugins)


def savepoint_directory(checkpoints: CheckpointConfig) -> str:
    """Where stop-with-savepoint writes: beside the checkpoints."""
    return checkpoints.directory.rstrip("/") + "-savepoints"


def latest_restore_point(checkpoints: CheckpointConfig) -> str | None:
    """Newest completed checkpoint or savepoint (a folder holding _metadata) on the local disk."""
    chk_root = Path(checkpoints.directory.removeprefix("file://"))
    sp_root = Path(savepoint_directory(checkpoints).removeprefix("file://"))
    # Every (re)start is a new job id with its own sub-folder, so compare by time, not by N.
    completed = [*chk_root.glob("*/chk-*/_metadata"), *sp_root.glob("savepoint-*/_metadata")]
    if not completed:
        return None
    return str(max(completed, key=lambda p: p.stat().st_mtime).parent)


def stop_with_savepoint(client: JobClient, savepoint_dir: str, timeout_s: float = 120.0) -> str:
    """Stop the job after a final savepoint; returns its path (pyflink's own wrapper is broken)."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    canonical = jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    future = client._j_job_client.stopWithSavepoint(False, savepoint_dir, canonical)
    return str(future.get(int(timeout_s * 1000), jvm.java.util.concurrent.TimeUnit.MILLISECONDS))


def run_until_stopped(client: JobClient, checkpoints: CheckpointConfig, log: logging.Logger) -> int:
    """Watch a running job until SIGTERM/SIGINT (then stop it with a savepoint: 0) or its own end (1)."""
    import signal
    import time

    stop_requested: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop_requested.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stop_requested.append(signum))
    while not stop_requested:
        status = str(client.get_job_status().result())
        if status in ("FAILED", "CANCELED", "FINISHED"):
            log.error("job ended on its own with status %s; see the Flink log", status)
            return 1
        time.sleep(1)
    path = stop_with_savepoint(client, savepoint_directory(checkpoints))
    log.info("stopped with savepoint %s", path)
    return 0
