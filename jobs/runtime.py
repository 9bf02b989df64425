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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.metrics.flink_reporter import plugin_dir, reporter_config
from connectors.metrics.targets import LOOPBACK
from connectors.properties import (
    CheckpointConfig,
    ConfigError,
    RuntimeConfig,
    S3Config,
    medistream_home,
    pid_alive,
)

if TYPE_CHECKING:
    from pyflink.common import Configuration, JobClient
    from pyflink.datastream import StreamExecutionEnvironment

REPO_ROOT = Path(__file__).resolve().parent.parent
LIB_DIR = REPO_ROOT / "lib"
DEPENDENCIES_JAR = LIB_DIR / "pyflink-dependencies.jar"


def prepare_process_environment(runtime: RuntimeConfig | None = None) -> None:
    """Set the variables the PyFlink gateway reads; call before the first pyflink JVM starts.

    On a cluster there is nothing to prepare: the cluster holds the jars and plugins and runs the
    Python workers (Managed Flink from the zip's run options).
    """
    if runtime is not None and runtime.deployment == "cluster":
        return
    if not DEPENDENCIES_JAR.exists():
        raise ConfigError(f"{DEPENDENCIES_JAR} is missing: run ./medistream setup (mvn package) first")
    import pyflink

    site_packages = sysconfig.get_paths()["purelib"]
    os.environ.setdefault("FLINK_HOME", str(Path(pyflink.__file__).parent))
    os.environ["FLINK_PLUGINS_DIR"] = str(LIB_DIR / "plugins")
    # The mini-cluster finds metric reporters on the class path only (no plugin manager for them): the
    # Prometheus reporter on loopback (connectors/metrics/flink_reporter.py) goes there, beside Hadoop.
    os.environ["HADOOP_CLASSPATH"] = os.pathsep.join((str(LIB_DIR / "system" / "*"), str(plugin_dir() / "*")))
    paths = [str(REPO_ROOT), site_packages, os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    serve_python_workers_on_loopback()


def serve_python_workers_on_loopback() -> None:
    """Make PyFlink's loopback worker pool listen on 127.0.0.1, once per process.

    On the mini-cluster, PyFlink runs process-mode Python functions inside this process through a gRPC
    worker pool that listens on every interface (`[::]:0`), and a second time for each environment that
    starts it (the singleton's __init__ forgets the first). Ours serves the same servicer on 127.0.0.1 and
    hands every caller the one address (apache-flink 2.2.1's `start`, with the bind address changed).
    """
    import functools
    import logging as _logging

    level = _logging.getLogger().level
    from pyflink.fn_execution.beam import beam_worker_pool_service as pool  # sets the root logger to WARNING

    _logging.getLogger().setLevel(level)
    servicer_class = pool.BeamFnLoopbackWorkerPoolServicer
    if getattr(servicer_class.start, "on_loopback", False):
        return
    address: list[str] = []

    def start(self: Any) -> str:
        if not address:
            server = pool.grpc.server(pool.thread_pool_executor.shared_unbounded_instance())
            port = server.add_insecure_port(f"{LOOPBACK}:0")
            pool.beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(self, server)
            server.start()
            pool.atexit.register(functools.partial(server.stop, 1))
            address.append(f"{LOOPBACK}:{port}")
        self._worker_address = address[0]
        return address[0]

    start.on_loopback = True  # type: ignore[attr-defined]
    servicer_class.start = start


# What a job may set in code on Managed Flink 2.2, which throws at start on any other key ("Programmatic
# Flink configuration properties", AWS documentation, read 2026-12-04; decision 0016). Everything else
# is the cluster's: Managed Flink's application configuration, or `medistream cluster`'s config.yaml.
MANAGED_CODE_KEYS = frozenset({
    "execution.runtime-mode", "pipeline.auto-generate-uids", "pipeline.auto-watermark-interval",
    "pipeline.cached-files", "pipeline.classpaths", "pipeline.closure-cleaner-level", "pipeline.force-avro",
    "pipeline.force-kryo", "pipeline.generic-types", "pipeline.global-job-parameters", "pipeline.jars",
    "pipeline.jobvertex-parallelism-overrides", "pipeline.max-parallelism", "pipeline.name", "pipeline.object-reuse",
    "pipeline.operator-chaining.chain-operators-with-different-max-parallelism", "pipeline.operator-chaining.enabled",
    "pipeline.serialization-config", "pipeline.vertex-description-mode", "pipeline.vertex-name-include-index-prefix",
    "pipeline.watermark-alignment.allow-unaligned-source-splits",
    "execution.checkpointing.interval-during-backlog", "execution.checkpointing.unaligned",
    "python.execution-mode", "python.operator-chaining.enabled", "python.job-options",
    "python.internal.archives-key-map", "python.internal.files-key-map", "python.internal.requirements-file-key",
})
# The page also lists Table API/SQL keys; the copy read here was cut before them. These two, which the
# ingest job sets, are the ones to confirm on the first Managed Flink start (decision 0016).
MANAGED_TABLE_KEYS_TO_CONFIRM = frozenset({"table.exec.state.ttl", "table.exec.source.idle-timeout"})


# Table keys a job sets for operator ids that survive a change of parallelism (decision 0020); to
# confirm on the first Managed Flink start like the two above.
STABLE_UID_TABLE_KEYS = {"table.exec.uid.generation": "ALWAYS", "table.exec.iceberg.use-v2-sink": "true"}


# Keys the embedded heap backend's incremental cleanup visits per access of a state (see `expiring`). A visit
# of a value checks one timestamp; a visit of a map state's key copies that key's whole map (Flink's
# TtlMapState.getUnexpiredOrNull), so map states visit two keys per access (decision 0047).
VALUE_CLEANUP_PER_ACCESS = 10
MAP_CLEANUP_PER_ACCESS = 2


def expiring(descriptor: Any, ttl_ms: int) -> Any:
    """`descriptor` (a PyFlink state descriptor) with a time-to-live of `ttl_ms` after its last write.

    Expired entries go in RocksDB's compactions (a cluster) or a few per access (the embedded heap backend),
    both named here: PyFlink's default background cleanup builds a java.time.Duration through a Py4J
    gateway, which a TaskManager does not have (measured: the task failed at open on the cluster).
    A map state's keys are visited two per access: each visit copies the key's map, and ten per access were
    four fifths of the fraud detectors' task (decision 0047). Two still bound the heap: even if every access
    wrote a new key, the sweep would remove expired keys as fast as they come once at most half the keys
    held are expired, so a state holds at most twice its live keys (about 1.1 times with ten).
    """
    from pyflink.common import Time
    from pyflink.datastream.state import MapStateDescriptor, StateTtlConfig

    ttl = Time.milliseconds(ttl_ms)
    per_access = MAP_CLEANUP_PER_ACCESS if isinstance(descriptor, MapStateDescriptor) else VALUE_CLEANUP_PER_ACCESS
    descriptor.enable_time_to_live(StateTtlConfig.new_builder(ttl).disable_cleanup_in_background()
                                   .cleanup_in_rocksdb_compact_filter(1000, ttl)
                                   .cleanup_incrementally(per_access, False)
                                   .build())
    return descriptor


def keyed_by_first_field(stream: Any, key_type: Any, value_type: Any) -> Any:
    """`stream` of Row(key, value) as a KeyedStream on `key`, whose keyed functions see `value`: no Python step.

    PyFlink's `key_by` runs a Python map before every keyed operator that turns each element into
    Row(key, element) and then keys on field 0 with its Java `KeyByKeySelector`: one more crossing of the
    JVM-Python boundary per record (decision 0043). A stream whose rows already are Row(key, value) is keyed
    here by the same Java selector and the same key type (`Row(key_type)`), so the key's serialized form,
    and with it the keyed state of a savepoint taken behind PyFlink's map, is unchanged.
    """
    from pyflink.common import Types
    from pyflink.datastream.data_stream import KeyedStream
    from pyflink.java_gateway import get_gateway

    selector = get_gateway().jvm.KeyByKeySelector()
    keyed = stream._j_data_stream.keyBy(selector, Types.ROW([key_type]).get_java_type_info())
    return KeyedStream(keyed, value_type, stream)


def side_output(stream: Any, tag: Any) -> Any:
    """`stream`'s side output `tag` (an OutputTag of a Python operator), with no Python step in thread mode.

    PyFlink's `get_side_output` puts a Python `map(lambda i: i)` behind every side output. In thread mode the
    operator already hands Java each side-output element converted with the tag's own type (PyFlink's embedded
    SideOutputContext), so that map only crosses into Python and back: for each dead letter, late event and device
    event, and, until decision 0054 took the fraud facts off a side output, once per accepted claim with the fact
    unpickled and pickled again on the way (decision 0047). Here the side output is that
    Java stream itself, of the tag's type; in process mode it is PyFlink's, map and all.
    """
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import get_j_env_configuration

    j_stream = stream._j_data_stream
    mode = get_j_env_configuration(j_stream.getExecutionEnvironment()).get(
        get_gateway().jvm.org.apache.flink.python.PythonOptions.PYTHON_EXECUTION_MODE)
    if mode != "thread":
        return stream.get_side_output(tag)
    return DataStream(j_stream.getSideOutput(tag.get_java_output_tag()))


def operator_ids(env: StreamExecutionEnvironment) -> dict[str, Any]:
    """The job built on `env` as a savepoint sees it: {operator id: its vertex's name} under "operators",
    the operators that have no uid of their own (their id follows the graph's shape) under "without_uid", and
    every uid with its operator's name under "uids" (what to compare when an upgrade would drop state).

    The graph is generated the way execution generates it (PyFlink's Python operator configuration and
    chaining first: they fuse Python operators, which changes the ids), without clearing it.
    """
    graph = env._generate_stream_graph(clear_transformations=False)
    without = sorted(str(node.getOperatorName()) for node in graph.getStreamNodes().toArray()
                     if node.getTransformationUID() is None)
    uids = {str(node.getTransformationUID()): str(node.getOperatorName())
            for node in graph.getStreamNodes().toArray() if node.getTransformationUID() is not None}
    operators = {pair.getGeneratedOperatorID().toHexString(): str(vertex.getName())
                 for vertex in graph.getJobGraph().getVerticesSortedTopologicallyFromSources()
                 for pair in vertex.getOperatorIDs()}
    return {"operators": operators, "without_uid": without, "uids": uids}


def add_operator_ids_option(parser: Any) -> None:
    """`--operator-ids [FILE]`: build the job, write its operator ids as JSON (stdout: -), do not run it."""
    parser.add_argument("--operator-ids", nargs="?", const="-", metavar="FILE",
                        help="build the job, write its operator ids (what a savepoint keys state by) as JSON "
                             "to FILE (default: stdout) and exit without running it")


def write_operator_ids(env: StreamExecutionEnvironment, where: str) -> int:
    """Write operator_ids(env) to `where` (a path, or - for stdout); the entry point's exit code (0)."""
    import json

    text = json.dumps(operator_ids(env), indent=1, sort_keys=True)
    if where == "-":
        print(text)
    else:
        Path(where).write_text(text + "\n")
    return 0


def job_settings(runtime: RuntimeConfig, checkpoints: CheckpointConfig) -> dict[str, str]:
    """What every job sets in code, wherever it runs: keys Managed Flink allows."""
    return {"python.execution-mode": runtime.python_execution_mode, "pipeline.name": runtime.job_name,
            "execution.checkpointing.unaligned": str(checkpoints.unaligned).lower()}


def process_tmp_dir(max_age_s: float = 3600.0) -> Path:
    """This process's folder for Flink's temporary files (`io.tmp.dirs`): `.local/tmp/<pid>`, removed at exit.

    A mini-cluster leaves about 160 MB there (its blobs, the Python files of each task attempt) and a job
    that is SIGKILLed (the chaos and restore tests do it) never cleans up: measured 20 GB after a day of
    test runs, and a full disk failed a test. So the folders of processes that are gone, and anything else
    older than `max_age_s`, are removed first; except pytest's base folders (`pytest-of-<user>`), which pytest
    prunes itself and a test session longer than `max_age_s` is still using (measured: a 61-minute suite lost
    its temporary folders to a job started in its second hour).
    """
    import atexit
    import shutil
    import time

    root = medistream_home() / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():
        if child.name.startswith("pytest-of-"):
            continue
        stale = (not pid_alive(int(child.name)) if child.name.isdigit()
                 else time.time() - child.stat().st_mtime > max_age_s)
        if stale and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        elif stale:
            child.unlink(missing_ok=True)
    mine = root / str(os.getpid())
    mine.mkdir(exist_ok=True)
    atexit.register(shutil.rmtree, mine, True)
    return mine


def embedded_cluster_settings(checkpoints: CheckpointConfig, runtime: RuntimeConfig, s3: S3Config,
                              restore_from: str | None) -> dict[str, str]:
    """What a cluster owns, set in code only when the job brings its own mini-cluster (`embedded`)."""
    tmp = process_tmp_dir()
    settings = {
        "pipeline.jars": DEPENDENCIES_JAR.as_uri(),
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
        # The TaskManager's data (shuffle) server on loopback too; unset it listens on every interface.
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.host": "127.0.0.1",
        # The JobManager's blob server too (it listens on every interface unless told; the mini-cluster's RPC
        # is in-process); PyFlink's Python worker pool: serve_python_workers_on_loopback.
        "jobmanager.bind-host": "127.0.0.1",
        "table.exec.source.idle-timeout": "5 s",
        # Metrics on 127.0.0.1 for the local Prometheus (decision 0027); Managed Flink publishes its own.
        **reporter_config(),
    }
    if s3.endpoint:
        settings |= {"s3.endpoint": s3.endpoint, "s3.path.style.access": str(s3.path_style_access).lower()}
    if restore_from:
        settings["execution.savepoint.path"] = restore_from
    return settings


def check_managed_keys(keys: Iterable[str]) -> None:
    """ConfigError naming every key Managed Flink would refuse to take from code."""
    refused = sorted(set(keys) - MANAGED_CODE_KEYS - MANAGED_TABLE_KEYS_TO_CONFIRM)
    if refused:
        raise ConfigError(f"a job on a cluster may not set {', '.join(refused)} in code (Managed Flink refuses "
                          "them): they belong in the cluster's configuration")


def flink_configuration(
    checkpoints: CheckpointConfig, runtime: RuntimeConfig, s3: S3Config, restore_from: str | None,
    extra: Mapping[str, str] | None = None, cluster_extra: Mapping[str, str] | None = None,
) -> Configuration:
    """The configuration a job sets in code: its own keys, plus the cluster's when it runs embedded.

    `extra` are job keys (checked against Managed Flink's list on a cluster); `cluster_extra` are the
    cluster's, applied only embedded (on a cluster they go in its configuration instead).
    """
    from pyflink.common import Configuration

    settings = job_settings(runtime, checkpoints) | dict(extra or {})
    if runtime.deployment == "cluster":
        check_managed_keys(settings)
    else:
        settings = embedded_cluster_settings(checkpoints, runtime, s3, restore_from) | dict(cluster_extra or {}) \
            | settings
    conf = Configuration()
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


def restore_point(runtime: RuntimeConfig, checkpoints: CheckpointConfig, asked: str | None, fresh: bool) -> str | None:
    """Where an embedded job resumes from: the one asked for, else the newest on disk. On a cluster the
    cluster restores (Managed Flink from its snapshots, `flink run -s` locally): never from code."""
    if runtime.deployment == "cluster" or fresh:
        return None
    return asked or latest_restore_point(checkpoints)


def run_submitted(client: JobClient, runtime: RuntimeConfig, checkpoints: CheckpointConfig,
                  log: logging.Logger) -> int:
    """Embedded: watch the job until SIGTERM (stop with savepoint). On a cluster: the job is submitted,
    the cluster runs, restarts and stops it; the entry point returns."""
    if runtime.deployment == "cluster":
        log.info("job %s submitted to the cluster", client.get_job_id())
        return 0
    return run_until_stopped(client, checkpoints, log)


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
