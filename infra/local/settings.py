"""Settings for the local stack: where its state lives and which loopback ports it uses."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"

ENV_HOME = "MEDISTREAM_HOME"
ENV_KAFKA_PORT = "MEDISTREAM_KAFKA_PORT"
ENV_KAFKA_CONTROLLER_PORT = "MEDISTREAM_KAFKA_CONTROLLER_PORT"
ENV_MOTO_PORT = "MEDISTREAM_MOTO_PORT"


class SettingsError(ValueError):
    """A stack setting (usually from the environment) is invalid; the message names it."""


def _default_home() -> Path:
    return REPO_ROOT / ".local"


def check_ports(ports: Mapping[str, int], owner: str) -> None:
    """SettingsError unless every port is a TCP port and no two are the same (`owner`: stack, cluster)."""
    for name, port in ports.items():
        if not 1 <= port <= 65535:
            raise SettingsError(f"{name}={port} is not a TCP port (1-65535)")
    if len(set(ports.values())) != len(ports):
        raise SettingsError(f"{owner} ports must be distinct, got {dict(ports)}")


def ports_from_env(env: Mapping[str, str], variables: Mapping[str, str]) -> dict[str, int]:
    """{attribute: port} of the environment variables (variable -> attribute) that are set."""
    ports = {}
    for var, attr in variables.items():
        raw = env.get(var)
        if raw:
            try:
                ports[attr] = int(raw)
            except ValueError:
                raise SettingsError(f"{var}={raw!r} is not an integer port") from None
    return ports


@dataclass(frozen=True)
class StackSettings:
    """Where the local stack keeps its state and how to reach it; all servers bind to loopback."""

    home: Path = field(default_factory=_default_home)
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    moto_port: int = 15000
    region: str = "us-east-1"
    # moto accepts any credentials; these are the conventional dummy values, not secrets.
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    landing_bucket: str = "medistream-landing"
    warehouse_bucket: str = "medistream-warehouse"
    archive_bucket: str = "medistream-archive"
    reference_bucket: str = "medistream-reference"
    archive_kms_alias: str = "alias/medistream-archive"
    kafka_heap_mb: int = 512
    kafka_health_timeout_s: float = 60.0
    moto_health_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())
        check_ports({"kafka_port": self.kafka_port, "kafka_controller_port": self.kafka_controller_port,
                     "moto_port": self.moto_port}, "stack")
        if not self.archive_kms_alias.startswith("alias/"):
            raise SettingsError(
                f"archive_kms_alias={self.archive_kms_alias!r} must start with 'alias/'"
            )
        if self.kafka_heap_mb < 128:
            raise SettingsError(
                f"kafka_heap_mb={self.kafka_heap_mb} is too small; use at least 128"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackSettings:
        """Build settings from defaults plus MEDISTREAM_* environment overrides."""
        env = os.environ if env is None else env
        overrides: dict[str, object] = dict(ports_from_env(env, {
            ENV_KAFKA_PORT: "kafka_port", ENV_KAFKA_CONTROLLER_PORT: "kafka_controller_port",
            ENV_MOTO_PORT: "moto_port"}))
        if env.get(ENV_HOME):
            overrides["home"] = Path(env[ENV_HOME])
        return cls(**overrides)  # type: ignore[arg-type]

    # Endpoints -----------------------------------------------------------------------------

    def bootstrap_servers(self) -> str:
        """Kafka bootstrap servers for clients, e.g. '127.0.0.1:19092'."""
        return f"{LOOPBACK}:{self.kafka_port}"

    def controller_endpoint(self) -> str:
        """The KRaft controller listener, 'host:port'."""
        return f"{LOOPBACK}:{self.kafka_controller_port}"

    def s3_endpoint(self) -> str:
        """The moto endpoint URL for every AWS service, e.g. 'http://127.0.0.1:15000'."""
        return f"http://{LOOPBACK}:{self.moto_port}"

    def warehouse_uri(self) -> str:
        """The Iceberg warehouse location."""
        return f"s3://{self.warehouse_bucket}/"

    def buckets(self) -> tuple[str, ...]:
        """All buckets the stack provisions."""
        return (self.landing_bucket, self.warehouse_bucket, self.archive_bucket, self.reference_bucket)

    # State layout (everything under home) ---------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """Directory for PID files."""
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        """Directory for component logs."""
        return self.home / "logs"

    @property
    def kafka_dir(self) -> Path:
        """Kafka's root: libs/, config/, data/."""
        return self.home / "kafka"

    @property
    def kafka_libs_dir(self) -> Path:
        """Broker jars fetched by Maven."""
        return self.kafka_dir / "libs"

    @property
    def kafka_config_dir(self) -> Path:
        """Generated server.properties and log4j2.properties."""
        return self.kafka_dir / "config"

    @property
    def kafka_data_dir(self) -> Path:
        """KRaft metadata and topic logs (log.dirs)."""
        return self.kafka_dir / "data"

    @property
    def iceberg_dir(self) -> Path:
        """Directory holding the Iceberg JDBC (SQLite) catalog."""
        return self.home / "iceberg"

    @property
    def iceberg_catalog_path(self) -> Path:
        """SQLite file of the Iceberg JDBC catalog (created by the Flink job, not by the stack)."""
        return self.iceberg_dir / "catalog.db"
