"""Settings and the generated config.yaml of the local standalone Flink cluster (`medistream cluster`).

Pure functions, no JVM: where the cluster's state lives, which loopback ports it takes, and the Flink
configuration its JobManager and TaskManagers read from a copied conf dir (FLINK_CONF_DIR).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from connectors.metrics.flink_reporter import FLINK_PORTS, reporter_config
from connectors.properties import S3Config, medistream_home
from infra.local.settings import LOOPBACK, REPO_ROOT, SettingsError, check_ports, ports_from_env

ENV_REST_PORT = "MEDISTREAM_FLINK_REST_PORT"
ENV_RPC_PORT = "MEDISTREAM_FLINK_RPC_PORT"
ENV_BLOB_PORT = "MEDISTREAM_FLINK_BLOB_PORT"
ENV_CHECKPOINTS = "MEDISTREAM_FLINK_CHECKPOINTS"
# The interpreter of the cluster's Python workers (and its site-packages on every process's PYTHONPATH):
# the project's venv by default, the Managed-Flink-like runtime for deployed zips (tools/deploy.py).
ENV_PYTHON = "MEDISTREAM_FLINK_PYTHON"

LIB_DIR = REPO_ROOT / "lib"
# Our S3 filesystem plugin (jobs/runtime.py loads the same folder) and the system class path jars.
S3_PLUGIN = LIB_DIR / "plugins" / "s3-fs-hadoop"
SYSTEM_JARS = LIB_DIR / "system"


def flink_home() -> Path:
    """The Flink distribution inside the apache-flink wheel of this interpreter (bin/, lib/, opt/)."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


@dataclass(frozen=True)
class ClusterSettings:
    """One local cluster: its folder, loopback ports, memory and where its checkpoints go."""

    home: Path = field(default_factory=lambda: medistream_home() / "cluster")
    rest_port: int = 18081
    rpc_port: int = 16123
    blob_port: int = 16124
    taskmanagers: int = 2
    slots_per_taskmanager: int = 2
    jobmanager_memory: str = "1024m"
    taskmanager_memory: str = "1728m"
    # A bucket the stack provisions; `stack down` empties it (moto keeps S3 in memory).
    checkpoints_uri: str = "s3://medistream-warehouse/cluster"
    checkpoint_interval: str = "10 s"
    python_executable: str = field(default_factory=lambda: sys.executable)
    start_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())
        check_ports({"rest_port": self.rest_port, "rpc_port": self.rpc_port, "blob_port": self.blob_port}, "cluster")
        if not self.checkpoints_uri.startswith("s3://"):
            raise SettingsError(f"checkpoints_uri={self.checkpoints_uri!r} must be an s3:// location")
        if self.taskmanagers < 1 or self.slots_per_taskmanager < 1:
            raise SettingsError("a cluster needs at least one TaskManager with one slot")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ClusterSettings:
        """Defaults plus MEDISTREAM_FLINK_* environment overrides (and explicit ones, for tests)."""
        env = os.environ if env is None else env
        values: dict[str, object] = dict(ports_from_env(env, {
            ENV_REST_PORT: "rest_port", ENV_RPC_PORT: "rpc_port", ENV_BLOB_PORT: "blob_port"}))
        if env.get(ENV_PYTHON):
            values["python_executable"] = env[ENV_PYTHON]
        if env.get(ENV_CHECKPOINTS):
            values["checkpoints_uri"] = env[ENV_CHECKPOINTS].rstrip("/")
        return cls(**(values | overrides))  # type: ignore[arg-type]

    # Layout under home ------------------------------------------------------------------------

    @property
    def conf_dir(self) -> Path:
        """FLINK_CONF_DIR: the generated config.yaml and the distribution's log4j files."""
        return self.home / "conf"

    @property
    def run_dir(self) -> Path:
        """PID files (ours, and the distribution scripts' own)."""
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        """FLINK_LOG_DIR: one .log per process, plus our console capture per process."""
        return self.home / "log"

    @property
    def plugins_dir(self) -> Path:
        """FLINK_PLUGINS_DIR: the S3 filesystem and the Prometheus reporter."""
        return self.home / "plugins"

    @property
    def tmp_dir(self) -> Path:
        """io.tmp.dirs of every process."""
        return self.home / "tmp"

    def rest_url(self) -> str:
        """The REST API and web UI, e.g. http://127.0.0.1:18081."""
        return f"http://{LOOPBACK}:{self.rest_port}"

    def processes(self) -> tuple[str, ...]:
        """Names of the processes `up` starts: the JobManager, then tm1..tmN."""
        return ("jobmanager", *(f"tm{i}" for i in range(1, self.taskmanagers + 1)))

    def ports(self) -> dict[str, tuple[int, str]]:
        """Fixed ports -> (port, the environment variable that moves it)."""
        return {"REST/web UI": (self.rest_port, ENV_REST_PORT), "JobManager RPC": (self.rpc_port, ENV_RPC_PORT),
                "blob server": (self.blob_port, ENV_BLOB_PORT)}


def flink_config(settings: ClusterSettings, s3: S3Config, prometheus_ports: str | None = FLINK_PORTS) -> dict[str, str]:
    """The flat Flink configuration of every process of the cluster (written as config.yaml)."""
    checkpoints = settings.checkpoints_uri.rstrip("/")
    conf = {
        # Every server binds to loopback, and advertises loopback.
        "jobmanager.rpc.address": LOOPBACK,
        "jobmanager.rpc.port": str(settings.rpc_port),
        "jobmanager.bind-host": LOOPBACK,
        "taskmanager.host": LOOPBACK,
        "taskmanager.bind-host": LOOPBACK,
        "rest.address": LOOPBACK,
        "rest.bind-address": LOOPBACK,
        "rest.port": str(settings.rest_port),
        "blob.server.port": str(settings.blob_port),
        # Small processes for a 2-core machine shared with the stack and other runs.
        "jobmanager.memory.process.size": settings.jobmanager_memory,
        "taskmanager.memory.process.size": settings.taskmanager_memory,
        "taskmanager.numberOfTaskSlots": str(settings.slots_per_taskmanager),
        "parallelism.default": "2",
        "jobmanager.execution.failover-strategy": "region",
        # Spread a job's subtasks over both TaskManagers, so losing one TaskManager is a real failover.
        "taskmanager.load-balance.mode": "SLOTS",
        # A killed TaskManager is noticed in seconds (failed heartbeat RPCs), not after the 50 s default.
        "heartbeat.interval": "2 s",
        "heartbeat.timeout": "20 s",
        "heartbeat.rpc-failure-threshold": "2",
        # State and exactly-once checkpoints on the local S3 API, kept when a job is cancelled.
        "state.backend.type": "rocksdb",
        "execution.checkpointing.incremental": "true",
        "execution.checkpointing.dir": f"{checkpoints}/checkpoints",
        "execution.checkpointing.savepoint-dir": f"{checkpoints}/savepoints",
        "execution.checkpointing.interval": settings.checkpoint_interval,
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.timeout": "2 min",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "execution.checkpointing.tolerable-failed-checkpoints": "3",
        # Bounded restarts: a broken job ends FAILED where `cluster status` shows why, it does not loop.
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "1 s",
        "restart-strategy.exponential-delay.max-backoff": "30 s",
        "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
        "restart-strategy.exponential-delay.reset-backoff-threshold": "10 min",
        "restart-strategy.exponential-delay.attempts-before-reset-backoff": "5",
        "s3.path.style.access": str(s3.path_style_access).lower(),
        # pemja (inside flink-python, on the system class path: tools/cluster.py) from the parent class
        # loader only, as org.apache.flink.* already is: its native library is loaded once per JVM.
        "classloader.parent-first-patterns.additional": "pemja.",
        "python.executable": settings.python_executable,
        "python.client.executable": settings.python_executable,
        "io.tmp.dirs": str(settings.tmp_dir),
        "env.log.dir": str(settings.log_dir),
        "env.pid.dir": str(settings.run_dir),
        "web.submit.enable": "false",
        "web.cancel.enable": "true",
    }
    if s3.endpoint:
        conf["s3.endpoint"] = s3.endpoint
    if prometheus_ports is not None:
        # Flink's Prometheus reporter binds every interface; ours binds 127.0.0.1 (connectors/metrics/flink_reporter.py,
        # the plugin write_conf_dir links). Each process takes the first free port and announces it to Prometheus.
        conf |= reporter_config(prometheus_ports)
    return conf


def config_yaml(conf: Mapping[str, str], java_opts: str = "") -> str:
    """config.yaml text: flat keys, each value a quoted YAML string (Flink 2 reads standard YAML)."""
    import json

    lines = ["# Generated by `medistream cluster up` (tools/cluster_config.py); edits are overwritten."]
    if java_opts:
        conf = {"env.java.opts.all": java_opts, **conf}
    # JSON strings are valid YAML scalars and quote paths and durations safely.
    lines += [f"{key}: {json.dumps(value)}" for key, value in conf.items()]
    return "\n".join(lines) + "\n"


def distribution_java_opts(distribution_conf: Path) -> str:
    """The --add-opens/--add-exports flags the distribution's own config.yaml gives every JVM."""
    import yaml

    doc = yaml.safe_load(distribution_conf.read_text()) or {}
    opts = doc.get("env", {}).get("java", {}).get("opts", {}).get("all", "")
    return str(opts)
