"""The Kinesis door's JVM: its classpath (lib/kcl/), its settings file, its command line, its topics."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from connectors.kinesis_pull.config import KinesisPullConfig
from connectors.properties import REPO_ROOT, ConfigError

KCL_DIR = REPO_ROOT / "lib" / "kcl"
WORKER_JAR = "medistream-kinesis-pull.jar"  # built from java/ by pom.xml, beside KCL's jars
MAIN_CLASS = "com.medistream.kinesis.KinesisPull"


def classpath(kcl_dir: Path = KCL_DIR) -> str:
    """lib/kcl/* once `./medistream` has built it; a ConfigError saying how otherwise."""
    if not (kcl_dir / WORKER_JAR).is_file():
        raise ConfigError(f"{kcl_dir / WORKER_JAR} is missing: run ./medistream setup (it builds lib/kcl/ with "
                          "mvn -f connectors/kinesis_pull/pom.xml package)")
    return f"{kcl_dir}/*"


def settings_text(cfg: KinesisPullConfig) -> str:
    """The worker's settings (java.util.Properties); names and numbers only, no credentials."""
    values = {
        "stream": cfg.stream, "application": cfg.application, "region": cfg.region, "endpoint": cfg.endpoint,
        "worker.id": cfg.worker_id, "raw.topic": cfg.raw_topic, "cursor.topic": cfg.cursor_topic,
        "bootstrap.servers": cfg.bootstrap_servers, "transactional.id.prefix": cfg.transactional_id_prefix,
        "max.records": cfg.max_records, "idle.between.reads.ms": cfg.idle_between_reads_ms,
        "failover.time.ms": cfg.failover_time_ms, "shard.sync.interval.ms": cfg.shard_sync_interval_ms,
        "parent.shard.poll.ms": cfg.parent_shard_poll_ms, "shutdown.timeout.ms": cfg.shutdown_timeout_ms,
        "retry.max.attempts": cfg.retry_max_attempts, "retry.backoff.ms": cfg.retry_backoff_ms,
        "cloudwatch.metrics": str(cfg.cloudwatch_metrics).lower(),
    }
    # Properties files treat backslash and ':' / '=' specially in keys only; our values hold neither backslashes
    # nor newlines (validated names, URLs, numbers).
    return "".join(f"{key}={value}\n" for key, value in values.items())


def write_settings(cfg: KinesisPullConfig, folder: Path) -> Path:
    """Write the settings to <folder>/kinesis-pull-<application>.properties (mode 0600); return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"kinesis-pull-{cfg.application}.properties"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(settings_text(cfg))
    return path


def java_command(cfg: KinesisPullConfig, settings: Path, kcl_dir: Path = KCL_DIR,
                 log_level: str = "warn") -> list[str]:
    """The JVM's argv: small heap, JSON (not CBOR) to Kinesis, KCL's log lines on stderr."""
    java = shutil.which("java")
    if java is None:
        raise ConfigError("no java on PATH: run ./medistream setup (OpenJDK 17)")
    return [
        java, f"-Xmx{cfg.heap}", "-XX:+UseSerialGC",
        # The SDK speaks CBOR to Kinesis by default; JSON is the same API and what every endpoint accepts.
        "-Daws.cborEnabled=false",
        f"-Dorg.slf4j.simpleLogger.defaultLogLevel={log_level}",
        "-Dorg.slf4j.simpleLogger.showDateTime=true",
        "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
        "-cp", classpath(kcl_dir), MAIN_CLASS, str(settings),
    ]


def prepare_topics(cfg: KinesisPullConfig) -> None:
    """Create raw.<feed> and the compacted cursor topic unless they exist (a cursor topic not compacted is refused)."""
    from connectors.kafka import create_missing_topics
    from connectors.rest_pull.cursors import ensure_cursor_topic

    create_missing_topics(cfg.bootstrap_servers, [cfg.raw_topic])
    ensure_cursor_topic(cfg.bootstrap_servers, cfg.cursor_topic)
