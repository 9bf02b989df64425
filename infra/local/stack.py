"""`medistream stack up|down|status`: the local Kafka broker, moto server and Iceberg catalog dir, and
Prometheus with Alertmanager (infra/local/prometheus.py) and the OpenLineage store (infra/local/lineage_store.py):
observers, the stack is healthy without them.

All state (PID files, logs, Kafka data, the Iceberg catalog) lives under settings.home. `up` is
idempotent; `down` stops only processes whose PID file `up` wrote and whose command line still
matches. moto is in-memory, so `down` loses S3 contents and KMS keys; the next `up` recreates the
buckets and key empty, and `down` removes the Iceberg catalog and the job checkpoints that
point into it (forget_s3_state). Kafka topics and consumer offsets survive `down`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infra.local import kafka, lineage_store, moto_server, postgres, process
from infra.local import prometheus as prom
from infra.local.settings import (
    ENV_KAFKA_CONTROLLER_PORT,
    ENV_KAFKA_PORT,
    ENV_MOTO_PORT,
    StackSettings,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComponentStatus:
    """One server of the stack as seen now."""

    name: str
    endpoint: str
    pid: int | None  # set only for a live process that this home's `up` started
    healthy: bool
    log: Path
    started_in_s: float | None = None  # set by `up` when it started the process

    @property
    def running(self) -> bool:
        """True if our process is alive (healthy or not)."""
        return self.pid is not None


@dataclass(frozen=True)
class StackStatus:
    """The whole local stack as seen now."""

    home: Path
    kafka: ComponentStatus
    moto: ComponentStatus
    iceberg_catalog_dir: Path
    iceberg_catalog_dir_exists: bool
    prometheus: ComponentStatus | None = None  # None: not started by this home's `up`
    lineage: ComponentStatus | None = None  # the OpenLineage store (infra/local/lineage_store.py); None: not ours
    postgres: ComponentStatus | None = None  # the operational store (infra/local/postgres.py); None: not running

    @property
    def healthy(self) -> bool:
        """True if every server answers and the Iceberg catalog dir exists."""
        return (self.kafka.healthy and self.moto.healthy and self.iceberg_catalog_dir_exists
                and self.postgres is not None and self.postgres.healthy)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view for the CLI."""
        data = asdict(self)
        data["healthy"] = self.healthy
        for name in ("kafka", "moto", "prometheus", "lineage", "postgres"):
            if getattr(self, name) is not None:
                data[name]["running"] = getattr(self, name).running
        return _stringify_paths(data)


def _stringify_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stringify_paths(v) for k, v in value.items()}
    return str(value) if isinstance(value, Path) else value


def _make_dirs(settings: StackSettings) -> None:
    for directory in (
        settings.run_dir,
        settings.logs_dir,
        settings.kafka_dir,
        settings.iceberg_dir,
    ):
        directory.mkdir(parents=True, exist_ok=True)


def _status(settings: StackSettings, started_in: dict[str, float]) -> StackStatus:
    kafka_proc = process.owned_process(kafka.pid_file(settings))
    moto_proc = process.owned_process(moto_server.pid_file(settings))
    # Probe only a port that something holds: a probe of a dead port would wait out its timeout.
    kafka_ok = process.port_accepts(settings.kafka_port) and kafka.is_healthy(settings)
    moto_ok = process.port_accepts(settings.moto_port) and moto_server.is_healthy(settings)
    return StackStatus(
        home=settings.home,
        kafka=ComponentStatus(
            name="kafka",
            endpoint=settings.bootstrap_servers(),
            pid=kafka_proc.pid if kafka_proc else None,
            healthy=kafka_ok,
            log=kafka.log_file(settings),
            started_in_s=started_in.get("kafka"),
        ),
        moto=ComponentStatus(
            name="moto",
            endpoint=settings.s3_endpoint(),
            pid=moto_proc.pid if moto_proc else None,
            healthy=moto_ok,
            log=moto_server.log_file(settings),
            started_in_s=started_in.get("moto"),
        ),
        iceberg_catalog_dir=settings.iceberg_dir,
        iceberg_catalog_dir_exists=settings.iceberg_dir.is_dir(),
        prometheus=_prometheus_status(settings),
        lineage=_lineage_status(settings),
        postgres=_postgres_status(settings, started_in),
    )


def _postgres_status(settings: StackSettings, started_in: dict[str, float]) -> ComponentStatus | None:
    pg = postgres.PostgresSettings.from_env(settings.home)
    found = postgres.status(pg)
    if found["pid"] is None:
        return None
    return ComponentStatus(name="postgres", endpoint=found["endpoint"], pid=found["pid"], healthy=found["healthy"],
                           log=pg.log_file, started_in_s=started_in.get("postgres"))


def _lineage_status(settings: StackSettings) -> ComponentStatus | None:
    pid_file = settings.home / "run" / "lineage.pid"
    proc = process.owned_process(pid_file)
    if proc is None:
        return None
    return ComponentStatus(name="lineage", endpoint=lineage_store.url(), pid=proc.pid, healthy=lineage_store.running(),
                           log=settings.home / "logs" / "lineage.log")


def start_lineage(settings: StackSettings) -> str | None:
    """Start the local OpenLineage store (idempotent); its URL, or None with a warning (an observer)."""
    try:
        found = lineage_store.start(settings.home)
    except process.StackError as err:
        log.warning("lineage store: not started (%s); the stack runs without it", err)
        return None
    log.info("lineage store on %s", found)
    return found


def _prometheus_status(settings: StackSettings) -> ComponentStatus | None:
    observer = prom.PrometheusSettings.from_env(settings.home)
    proc = process.owned_process(observer.pid_file("prometheus"))
    if proc is None:
        return None
    return ComponentStatus(name="prometheus", endpoint=observer.url(), pid=proc.pid,
                           healthy=prom.running(observer), log=observer.log_file("prometheus"))


def start_prometheus(settings: StackSettings) -> dict[str, str] | None:
    """Start the local Prometheus and Alertmanager (idempotent); their URLs, or None with a warning."""
    try:
        urls = prom.start(prom.PrometheusSettings.from_env(settings.home))
    except process.StackError as err:
        log.warning("prometheus: not started (%s); the stack runs without it", err)
        return None
    log.info("prometheus on %s, alertmanager on %s", urls["prometheus"], urls["alertmanager"])
    return urls


def status(settings: StackSettings | None = None) -> StackStatus:
    """Report each component's PID (if ours), health and endpoint; starts and stops nothing."""
    return _status(settings or StackSettings.from_env(), {})


def up(settings: StackSettings | None = None) -> StackStatus:
    """Start whatever is not running, wait until healthy, provision S3/KMS; a no-op when up."""
    settings = settings or StackSettings.from_env()
    _make_dirs(settings)
    kafka_running = process.owned_process(kafka.pid_file(settings)) is not None
    moto_running = process.owned_process(moto_server.pid_file(settings)) is not None

    # Every check that can fail fast runs before anything is started.
    if not kafka_running:
        process.ensure_port_free(settings.kafka_port, "kafka", ENV_KAFKA_PORT)
        process.ensure_port_free(
            settings.kafka_controller_port, "kafka controller", ENV_KAFKA_CONTROLLER_PORT
        )
    if not moto_running:
        process.ensure_port_free(settings.moto_port, "moto", ENV_MOTO_PORT)
    java = None if kafka_running else kafka.require_java()
    if java is not None and not kafka.is_installed(settings):
        kafka.require_mvn()

    started: list[Path] = []
    launched_at: dict[str, float] = {}
    started_in: dict[str, float] = {}
    try:
        if not moto_running:
            # Started first so it boots while Maven and the storage format run.
            moto_server.start(settings)
            started.append(moto_server.pid_file(settings))
            launched_at["moto"] = time.monotonic()
        if java is not None:
            kafka.install(settings)
            kafka.format_storage(settings, java)
            kafka.start(settings, java)
            started.append(kafka.pid_file(settings))
            launched_at["kafka"] = time.monotonic()

        moto_server.wait_healthy(settings)
        if "moto" in launched_at:
            started_in["moto"] = time.monotonic() - launched_at["moto"]
        moto_server.provision(settings)
        # The operational store, after moto: its roles' passwords go to the local Secrets Manager.
        pg = postgres.PostgresSettings.from_env(settings.home)
        pg_started = process.owned_process(pg.pid_file) is None
        launched_at["postgres"] = time.monotonic()
        postgres.start(pg)
        if pg_started:
            started.append(pg.pid_file)
            started_in["postgres"] = time.monotonic() - launched_at["postgres"]
        postgres.provision(pg, moto_server.client(settings, "secretsmanager"))
        kafka.wait_healthy(settings)
        if "kafka" in launched_at:
            started_in["kafka"] = time.monotonic() - launched_at["kafka"]
    except BaseException:
        # Leave nothing half-started behind; processes that were already up stay up.
        for pid_file in started:
            process.stop(pid_file)
        raise

    for name, seconds in started_in.items():
        log.info("%s healthy %.1fs after launch", name, seconds)
    start_prometheus(settings)
    start_lineage(settings)
    return _status(settings, started_in)


def down(
    settings: StackSettings | None = None,
    components: Iterable[str] = ("prometheus", "lineage", "postgres", "kafka", "moto"),
) -> dict[str, int | None]:
    """Stop the processes `up` started (Prometheus and the lineage store, then Kafka); the PID stopped per
    component."""
    settings = settings or StackSettings.from_env()
    wanted = set(components)
    unknown = wanted - {"kafka", "moto", "prometheus", "lineage", "postgres"}
    if unknown:
        raise ValueError(f"unknown stack components {sorted(unknown)}; expected prometheus, lineage, postgres, kafka "
                         "and/or moto")
    stopped: dict[str, int | None] = {}
    if "lineage" in wanted:
        stopped["lineage"] = lineage_store.stop(settings.home)
    if "prometheus" in wanted:
        for name, pid in prom.stop(prom.PrometheusSettings.from_env(settings.home)).items():
            stopped[name] = pid
    if "postgres" in wanted:
        stopped["postgres"] = postgres.stop(postgres.PostgresSettings.from_env(settings.home))
    # Kafka first: a clean broker shutdown avoids log recovery on the next start.
    if "kafka" in wanted:
        stopped["kafka"] = process.stop(kafka.pid_file(settings), term_timeout_s=30.0)
    if "moto" in wanted:
        stopped["moto"] = process.stop(moto_server.pid_file(settings), term_timeout_s=10.0)
        if stopped["moto"] is not None:
            forget_s3_state(settings)
    return stopped


def forget_s3_state(settings: StackSettings) -> None:
    """Drop local state that points into the in-memory S3 just lost: the catalog and checkpoints.

    Left behind, the catalog would name metadata files that no longer exist, and a restore would
    look for archive part files that are gone. Kafka keeps its data and consumer offsets.
    """
    import shutil

    settings.iceberg_catalog_path.unlink(missing_ok=True)
    for name in ("checkpoints", "checkpoints-savepoints"):
        shutil.rmtree(settings.home / name, ignore_errors=True)
