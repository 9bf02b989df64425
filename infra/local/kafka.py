"""Single-node Apache Kafka (KRaft, combined broker+controller) for the local stack."""

from __future__ import annotations

import base64
import logging
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from connectors.kafka import create_missing_topics
from infra.local import process
from infra.local.settings import StackSettings

KAFKA_VERSION = "4.1.1"
# Verified in kafka_2.13-4.1.1.jar: both are Scala objects in the core module.
BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"
MIN_JAVA = 17
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
_INSTALLED_MARKER = ".medistream-installed"

log = logging.getLogger(__name__)

# librdkafka reports each refused connection while the broker starts; keep that out of stderr.
_quiet = logging.getLogger("medistream.stack.kafka_client")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def pid_file(settings: StackSettings) -> Path:
    """PID file of the broker."""
    return settings.run_dir / "kafka.pid"


def log_file(settings: StackSettings) -> Path:
    """The broker's log (log4j output and JVM stdout/stderr)."""
    return settings.logs_dir / "kafka.log"


def _marker(settings: StackSettings) -> str:
    # The config path is unique per home, so `down` never touches another stack's broker.
    return str(settings.kafka_config_dir / "server.properties")


def parse_java_major(version_output: str) -> int | None:
    """Major Java version from `java -version` output ('1.8.0_392' -> 8, '17.0.15' -> 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java(java: str = "java") -> str:
    """Return the path of a Java 17+ executable, or raise process.ToolMissing."""
    path = shutil.which(java)
    if path is None:
        raise process.ToolMissing(
            f"`{java}` not found on PATH; Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+"
        )
    out = subprocess.run(
        [path, "-version"], capture_output=True, text=True, timeout=30, check=False
    )
    major = parse_java_major(out.stderr + out.stdout)
    if major is None or major < MIN_JAVA:
        raise process.ToolMissing(
            f"{path} is Java {major or 'of unknown version'}; Kafka {KAFKA_VERSION} needs "
            f"Java {MIN_JAVA}+ (install openjdk-17-jre-headless)"
        )
    return path


def is_installed(settings: StackSettings) -> bool:
    """True once the broker jars have been fetched completely."""
    return (settings.kafka_libs_dir / _INSTALLED_MARKER).exists()


def require_mvn() -> str:
    """Return the path of `mvn`, or raise process.ToolMissing."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise process.ToolMissing(
            "`mvn` not found on PATH; it fetches the Kafka jars (apt-get install maven)"
        )
    return mvn


def install(settings: StackSettings) -> None:
    """Fetch the broker jars with Maven into <home>/kafka/libs; skipped when already there."""
    if is_installed(settings):
        return
    mvn = require_mvn()
    # Copy into a staging dir so an interrupted download never looks installed.
    staging = settings.kafka_dir / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    argv = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
    ]
    log.info("fetching Kafka %s jars with Maven", KAFKA_VERSION)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0 or not (staging / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        detail = "\n".join((out.stdout + out.stderr).splitlines()[-30:])
        raise process.StackError(
            f"mvn could not fetch the Kafka jars ({' '.join(argv)}):\n{detail}"
        )
    (staging / _INSTALLED_MARKER).write_text(KAFKA_VERSION + "\n")
    shutil.rmtree(settings.kafka_libs_dir, ignore_errors=True)
    staging.replace(settings.kafka_libs_dir)


def write_config(settings: StackSettings) -> Path:
    """Write server.properties and log4j2.properties; return the server.properties path."""
    settings.kafka_config_dir.mkdir(parents=True, exist_ok=True)
    server = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # Static voters rather than a --standalone bootstrap: the format does not pin the port.
        "controller.quorum.voters": f"1@{settings.controller_endpoint()}",
        "listeners": f"PLAINTEXT://{settings.bootstrap_servers()},"
        f"CONTROLLER://{settings.controller_endpoint()}",
        "advertised.listeners": f"PLAINTEXT://{settings.bootstrap_servers()}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(settings.kafka_data_dir),
        "num.partitions": "2",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Flink's exactly-once sink holds transactions open up to a checkpoint interval or more.
        "transaction.max.timeout.ms": "900000",
        # 50 partitions each (the default) make the first group/transaction slow on one small node.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
    }
    path = settings.kafka_config_dir / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in server.items()))
    # Log to stdout, which launch() appends to <home>/logs/kafka.log: one writer, one file.
    (settings.kafka_config_dir / "log4j2.properties").write_text(
        "status = warn\n"
        "appender.out.type = Console\n"
        "appender.out.name = out\n"
        "appender.out.layout.type = PatternLayout\n"
        "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.out.ref = out\n"
        "logger.state.name = state.change.logger\n"
        "logger.state.level = WARN\n"
    )
    return path


def _java_argv(settings: StackSettings, java: str, main: str, *args: str) -> list[str]:
    return [
        java,
        f"-Xmx{settings.kafka_heap_mb}m",
        "-Xms64m",
        # Serial GC: smallest footprint, and a 2-core box gains nothing from G1's threads here.
        "-XX:+UseSerialGC",
        "-Djava.awt.headless=true",
        # Otherwise log4j's own hook races the broker's and the log stops mid-shutdown.
        "-Dlog4j2.shutdownHookEnabled=false",
        f"-Dlog4j2.configurationFile={settings.kafka_config_dir / 'log4j2.properties'}",
        "-cp",
        f"{settings.kafka_libs_dir}/*",
        main,
        *args,
    ]


def new_cluster_id() -> str:
    """A random KRaft cluster id as Kafka makes one: URL-safe base64 of a UUID, never starting with "-"
    (the storage tool would read such an id as an option; Kafka's Uuid.randomUuid() redraws too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def format_storage(settings: StackSettings, java: str) -> None:
    """Format the KRaft log dir once (a new cluster id); skipped when already formatted."""
    if (settings.kafka_data_dir / "meta.properties").exists():
        return
    config = write_config(settings)
    # Same encoding as org.apache.kafka.common.Uuid.toString(): url-safe base64, no padding.
    cluster_id = new_cluster_id()
    argv = _java_argv(
        settings, java, STORAGE_TOOL_MAIN, "format", "-t", cluster_id, "-c", str(config)
    )
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise process.StackError(f"formatting Kafka storage failed:\n{out.stdout}{out.stderr}")


def start(settings: StackSettings, java: str) -> psutil.Process:
    """Start the broker in the background; the caller waits for health."""
    config = write_config(settings)
    argv = _java_argv(settings, java, BROKER_MAIN, str(config))
    return process.launch(
        argv,
        log_file=log_file(settings),
        pid_file=pid_file(settings),
        marker=_marker(settings),
        cwd=settings.kafka_dir,
    )


def _admin(settings: StackSettings) -> object:
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {"bootstrap.servers": settings.bootstrap_servers(), "logger": _quiet}
    return AdminClient(config)


def is_healthy(settings: StackSettings, timeout_s: float = 3.0) -> bool:
    """True if the broker answers a metadata request and lists itself."""
    try:
        metadata = _admin(settings).list_topics(timeout=timeout_s)  # type: ignore[attr-defined]
    except Exception:
        return False
    return bool(metadata.brokers)


def wait_healthy(settings: StackSettings) -> float:
    """Block until the broker is healthy; return seconds waited or raise HealthTimeout."""
    return process.wait_until(
        # A closed port would make each probe wait out its whole timeout; check it cheaply first.
        lambda: process.port_accepts(settings.kafka_port) and is_healthy(settings, 2.0),
        component="kafka",
        timeout_s=settings.kafka_health_timeout_s,
        pid_file=pid_file(settings),
        log_file=log_file(settings),
        interval_s=0.2,
    )


def ensure_topics(
    settings: StackSettings, names: Iterable[str], partitions: int = 2, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet (replication 1); return the names created."""
    return create_missing_topics(settings.bootstrap_servers(), names, partitions, timeout_s=timeout_s,
                                 admin_config={"logger": _quiet})
