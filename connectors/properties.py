"""Runtime configuration: MSF property groups turned into frozen, validated dataclasses.

Below every job, tool and the local stack (all read the same properties), above the connectors whose
configs it builds.

Managed Flink hands a job its properties in /etc/flink/application_properties.json; locally the
same file format lives in conf/application_properties.json. This is the only place that reads
them, so a bad or missing key fails at start-up with a message that names it.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from connectors.archive import ArchiveConfig
from connectors.iceberg import CATALOG_IMPLS, JDBC_CATALOG, IcebergConfig, S3Config
from connectors.kafka import MSK_IAM, SECURITY_MODES, CuratedConfig, KafkaAuth, KafkaConfig
from connectors.kms import PhiConfig
from connectors.landing import DEFAULT_MAX_FILE_BYTES, LandingConfig
from connectors.reference import ReferenceConfig
from udfs.event_time import EventTimePolicy

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_PROPERTIES = REPO_ROOT / "conf" / "application_properties.json"
MANAGED_PROPERTIES = Path("/etc/flink/application_properties.json")
DEFAULT_JOB_NAME = "medistream-ingest"
DEFAULT_BATCH_PATH = "s3://medistream-landing/batch/"
DEPLOYMENTS = ("embedded", "cluster")
# A ${NAME} token in a property value: resolved here from the environment, or earlier by `medistream package`.
PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


class ConfigError(ValueError):
    """A property is missing or invalid; the message names the group and key."""


# Flink's duration units (org.apache.flink.util.TimeUtils), in milliseconds.
_DURATION_UNITS = {
    **dict.fromkeys(("d", "day", "days"), 86_400_000), **dict.fromkeys(("h", "hour", "hours"), 3_600_000),
    **dict.fromkeys(("m", "min", "minute", "minutes"), 60_000),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1_000),
    **dict.fromkeys(("ms", "milli", "millis", "millisecond", "milliseconds"), 1),
}
_DURATION = re.compile(r"\s*(\d+)\s*([a-z]*)\s*")


def duration_ms(text: str) -> int:
    """A Flink duration ("30 d", "12 h", "1 min", "500 ms", "2s"; no unit: ms) in milliseconds, as Flink reads it."""
    match = _DURATION.fullmatch(text.lower())
    if match is None or match.group(2) not in ("", *_DURATION_UNITS):
        raise ConfigError(f"{text!r} is not a Flink duration (e.g. '30 d', '12 h', '1 min', '500 ms')")
    return int(match.group(1)) * _DURATION_UNITS.get(match.group(2), 1)


def medistream_home() -> Path:
    """Folder that holds all local state (stack data, checkpoints, logs)."""
    return Path(os.environ.get("MEDISTREAM_HOME", REPO_ROOT / ".local"))


def pid_alive(pid: int) -> bool:
    """Is a process with this pid running (ours or another user's)? For local state kept per process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_aws_environment() -> None:
    """The local S3 API accepts any key; set placeholders so AWS SDKs do not go looking for real ones."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_REGION", "us-east-1")


@dataclass(frozen=True)
class CheckpointConfig:
    """Exactly-once checkpoints, retained on cancel so a job can be restarted from them."""

    directory: str
    interval_ms: int
    timeout_ms: int
    # Barriers overtake the records buffered between tasks (decision 0061): a slow branch (the fraud detectors)
    # no longer holds every sink's commit behind its queue. A key Managed Flink takes from code.
    unaligned: bool = True


@dataclass(frozen=True)
class RuntimeConfig:
    """Operator parallelism, the Python execution mode, and where the job runs."""

    parallelism: int
    python_execution_mode: str
    # Names the Flink job and prefixes its Kafka transactional ids: unique per concurrently running job.
    job_name: str = DEFAULT_JOB_NAME
    # "embedded": the job brings its own mini-cluster and sets every Flink setting in code.
    # "cluster": a Flink cluster runs it (Managed Flink, or `medistream cluster`); the cluster owns its
    # settings and the job sets in code only what Managed Flink 2.2 allows (jobs/runtime.py).
    deployment: str = "embedded"


@dataclass(frozen=True)
class OperationalConfig:
    """The operational store the `operational` route writes (connectors/operational.py): PostgreSQL locally,
    Aurora PostgreSQL in AWS. The connection (host, port, database, user, password) is the Secrets Manager
    secret `secret_id` (RDS's JSON form), read when the job is built; TLS is verified against `sslrootcert`."""

    secret_id: str = "medistream/operational/ops_writer"  # noqa: S105 -- the secret's name, not a value
    sslmode: str = "verify-full"
    sslrootcert: str = ""  # empty: the local server's CA, <MEDISTREAM_HOME>/postgres/tls/ca.crt
    flush_rows: int = 500  # the JDBC sink writes a batch at this many rows, after flush_interval, and at checkpoints
    flush_interval: str = "1 s"
    # How lineage names the store (OpenLineage: postgres://host:port, then database.schema.table); the
    # connection itself comes from the secret.
    lineage_namespace: str = "postgres://127.0.0.1:15432"
    database: str = "medistream"


@dataclass(frozen=True)
class FraudConfig:
    """The fraud detectors (udfs/fraud.py, jobs/fraud_operator.py): on or off, and the rules file."""

    enabled: bool = True
    rules: str = ""  # empty: the rules shipped in schemas/fraud/rules.yaml

    @property
    def rules_file(self) -> Path:
        """The rules file this configuration names."""
        from udfs.fraud import RULES_FILE

        return Path(self.rules) if self.rules else RULES_FILE


@dataclass(frozen=True)
class IngestConfig:
    """Everything jobs/ingest.py needs."""

    kafka: KafkaConfig
    s3: S3Config
    landing: LandingConfig
    iceberg: IcebergConfig
    archive: ArchiveConfig
    checkpoints: CheckpointConfig
    runtime: RuntimeConfig
    reference: ReferenceConfig
    feeds: FeedsConfig
    phi: PhiConfig
    curated: CuratedConfig
    operational: OperationalConfig = OperationalConfig()
    fraud: FraudConfig = FraudConfig()
    event_time: EventTimePolicy = field(default_factory=EventTimePolicy)


@dataclass(frozen=True)
class FeedsConfig:
    """Where the feed contracts are, and how long dedup remembers a record."""

    contracts_dir: str  # empty: the contracts shipped in schemas/feeds/
    dedup_ttl: str  # a Flink duration, e.g. "30 d"

    @property
    def directory(self) -> Path:
        """The folder the contracts are loaded from."""
        from schemas.contracts import FEEDS_DIR

        return Path(self.contracts_dir) if self.contracts_dir else FEEDS_DIR


class PropertyGroup:
    """Typed access to one property group, naming the group in every error."""

    def __init__(self, groups: Mapping[str, Mapping[str, str]], name: str) -> None:
        if name not in groups:
            raise ConfigError(f"missing property group '{name}'")
        self._name, self._map = name, groups[name]

    def str(self, key: str, default: str | None = None) -> str:
        """A string property, with ${VAR} placeholders resolved."""
        value = self._map.get(key, default)
        if value is None or (value == "" and default is None):
            raise ConfigError(f"missing property '{self._name}.{key}'")
        return _resolve(str(value), f"{self._name}.{key}")

    def int(self, key: builtins.str, default: builtins.int | None = None) -> builtins.int:
        """A positive integer property."""
        raw = self.str(key, None if default is None else str(default))
        if not raw.isdigit() or int(raw) <= 0:
            raise ConfigError(f"property '{self._name}.{key}' must be a positive integer")
        return int(raw)

    def bool(self, key: builtins.str, default: builtins.bool) -> builtins.bool:
        """A true/false property."""
        raw = self.str(key, str(default).lower()).lower()
        if raw not in ("true", "false"):
            raise ConfigError(f"property '{self._name}.{key}' must be true or false")
        return raw == "true"


def _resolve(value: str, where: str) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "MEDISTREAM_HOME":
            return str(medistream_home())
        if name not in os.environ:
            raise ConfigError(f"property '{where}' refers to unset environment variable {name}")
        return os.environ[name]

    return PLACEHOLDER.sub(sub, value)


def read_property_groups(path: Path) -> dict[str, dict[str, str]]:
    """Read an MSF application_properties.json into {group: {key: value}}."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"properties file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"properties file {path} is not valid JSON: {err}") from None
    if not isinstance(doc, list):
        raise ConfigError(f"properties file {path} must hold a list of property groups")
    groups: dict[str, dict[str, str]] = {}
    for entry in doc:
        if not isinstance(entry, dict) or "PropertyGroupId" not in entry:
            raise ConfigError(f"properties file {path}: every entry needs a PropertyGroupId")
        groups[entry["PropertyGroupId"]] = {k: str(v) for k, v in entry.get("PropertyMap", {}).items()}
    return groups


def default_properties_path() -> Path:
    """Managed Flink's file when present, else the local one (MEDISTREAM_PROPERTIES overrides)."""
    if "MEDISTREAM_PROPERTIES" in os.environ:
        return Path(os.environ["MEDISTREAM_PROPERTIES"])
    return MANAGED_PROPERTIES if MANAGED_PROPERTIES.exists() else LOCAL_PROPERTIES


def load_ingest_config(groups: Mapping[str, Mapping[str, str]]) -> IngestConfig:
    """Validate the property groups the ingest job needs."""
    kafka, landing, archive, chk, runtime, reference, feeds, curated = (
        PropertyGroup(groups, name) for name in ("kafka", "landing", "archive", "checkpoints", "runtime",
                                                 "reference", "feeds", "curated"))
    mode = runtime.str("python.execution-mode", "thread")
    if mode != "thread":
        # Process mode (decision 0051): the keyed Python operators' state goes through Beam's state requests, the
        # fraud detectors fail on PyFlink's MapState.put_all there, and the job measured no cheaper per record.
        raise ConfigError(f"property 'runtime.python.execution-mode' is {mode!r}: the ingest job runs in thread "
                          "mode only (decision 0051)")
    deployment = load_deployment(groups)
    return IngestConfig(
        kafka=KafkaConfig(
            bootstrap_servers=kafka.str("bootstrap.servers"),
            raw_topic_pattern=kafka.str("raw.topic.pattern", r"raw\..*"),
            dlq_topic=kafka.str("dlq.topic"),
            group_id=kafka.str("group.id", "medistream-ingest"),
            transaction_timeout_ms=kafka.int("transaction.timeout.ms", 600_000),
            auth=load_kafka_auth(groups),
        ),
        s3=load_s3_config(groups),
        landing=LandingConfig(path=landing.str("path"), monitor_interval=landing.str("monitor.interval", "5 s"),
                              max_file_bytes=landing.int("max.file.bytes", DEFAULT_MAX_FILE_BYTES)),
        iceberg=load_iceberg_config(groups),
        archive=ArchiveConfig(path=archive.str("path"), dead_letters_path=archive.str("dead.letters.path")),
        curated=CuratedConfig(snowflake_topic=curated.str("snowflake.topic"),
                              partner_topic_prefix=curated.str("partner.topic.prefix", "curated.partner.")),
        checkpoints=CheckpointConfig(
            directory=checkpoint_dir(chk, deployment),
            interval_ms=chk.int("interval.ms", 10_000),
            timeout_ms=chk.int("timeout.ms", 120_000),
            unaligned=chk.bool("unaligned", True),
        ),
        runtime=RuntimeConfig(parallelism=runtime.int("parallelism", 1), python_execution_mode=mode,
                              job_name=runtime.str("job.name", DEFAULT_JOB_NAME), deployment=deployment),
        reference=ReferenceConfig(path=reference.str("path"),
                                  monitor_interval=reference.str("monitor.interval", "30 s")),
        feeds=FeedsConfig(contracts_dir=feeds.str("contracts.dir", ""), dedup_ttl=feeds.str("dedup.ttl", "30 d")),
        phi=load_phi_config(groups),
        operational=load_operational_config(groups),
        fraud=load_fraud_config(groups),
        event_time=load_event_time_config(groups),
    )


EVENT_TIME_KEYS = {"out.of.orderness": "out_of_orderness_ms", "allowed.lateness": "allowed_lateness_ms",
                   "max.clock.skew": "max_clock_skew_ms", "state.ttl": "state_ttl_ms"}


def load_event_time_config(groups: Mapping[str, Mapping[str, str]]) -> EventTimePolicy:
    """The optional `event_time` group (durations; device events, decision 0040): `out.of.orderness` (5 s), `allowed.
    lateness` (30 s), `max.clock.skew` (5 min) and `state.ttl` (1 d, how long a silent device keeps its watermark).

    Our own runtime properties, read by the job: Managed Flink refuses Flink keys it does not allow-list when they are
    set in code, so nothing here becomes a Flink setting."""
    group = groups.get("event_time", {})
    unknown = sorted(set(group) - set(EVENT_TIME_KEYS))
    if unknown:
        raise ConfigError(f"property 'event_time.{unknown[0]}' is unknown (known: {', '.join(EVENT_TIME_KEYS)})")
    default = EventTimePolicy()
    values = {}
    for key, field_name in EVENT_TIME_KEYS.items():
        raw = group.get(key)
        if raw is None or raw == "":
            continue
        try:
            values[field_name] = duration_ms(_resolve(str(raw), f"event_time.{key}"))
        except ConfigError as err:
            raise ConfigError(f"property 'event_time.{key}': {err}") from None
    policy = dataclasses.replace(default, **values)
    if policy.state_ttl_ms <= policy.late_behind_ms:
        raise ConfigError("property 'event_time.state.ttl' must be longer than out.of.orderness + allowed.lateness")
    return policy


def load_fraud_config(groups: Mapping[str, Mapping[str, str]]) -> FraudConfig:
    """The optional `fraud` group: `enabled` (default true) and `rules` (default: the shipped rules), checked now."""
    from udfs.fraud import FraudRulesError, load_rules

    group = PropertyGroup({"fraud": {}, **groups}, "fraud")
    cfg = FraudConfig(enabled=group.bool("enabled", True), rules=_resolve(group.str("rules", ""), "fraud.rules"))
    if cfg.enabled:
        try:
            load_rules(cfg.rules_file)
        except FraudRulesError as err:
            raise ConfigError(str(err)) from err
    return cfg


def load_operational_config(groups: Mapping[str, Mapping[str, str]]) -> OperationalConfig:
    """The optional `operational` group (every key has a default: the local stack's server)."""
    group, default = PropertyGroup({"operational": {}, **groups}, "operational"), OperationalConfig()
    sslmode = group.str("sslmode", default.sslmode)
    if sslmode not in ("verify-full", "verify-ca"):
        raise ConfigError(f"property 'operational.sslmode' is {sslmode!r}: the operational store holds tokens of PHI, "
                          "so its TLS certificate is always verified (verify-full or verify-ca)")
    return OperationalConfig(
        secret_id=group.str("secret", default.secret_id), sslmode=sslmode,
        sslrootcert=group.str("sslrootcert", "") or str(medistream_home() / "postgres" / "tls" / "ca.crt"),
        flush_rows=group.int("flush.rows", default.flush_rows),
        flush_interval=group.str("flush.interval", default.flush_interval),
        lineage_namespace=group.str("lineage.namespace", default.lineage_namespace),
        database=group.str("database", default.database))


def load_batch_path(groups: Mapping[str, Mapping[str, str]]) -> str:
    """`batch.path`: where files for bounded batch runs land, `<path><feed>/<YYYY-MM-DD>/<file>` (tools/batch.py).

    Never below `landing.path` nor above it: the live ingest job reads everything under `landing.path`, and
    a batch file it read would be delivered by both jobs (each has its own dedup memory).
    """
    path = _resolve(str(groups.get("batch", {}).get("path") or DEFAULT_BATCH_PATH), "batch.path")
    scheme, _, rest = path.partition("://")
    if scheme not in ("s3", "file") or not rest.strip("/") or not path.endswith("/") or (
            scheme == "s3" and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/]+)*/", rest)):
        raise ConfigError(f"property 'batch.path' is {path!r}: it must be a folder URL ending in /, "
                          "e.g. s3://medistream-landing/batch/")
    landing = PropertyGroup(groups, "landing").str("path").rstrip("/") + "/"
    if path.startswith(landing) or landing.startswith(path):
        raise ConfigError(f"property 'batch.path' ({path}) must lie outside landing.path ({landing}): the live "
                          "ingest job reads every file below landing.path")
    return path


def batch_folder(batch_path: str, feed: str, day: str) -> str:
    """Where the files of `feed` for `day` (YYYY-MM-DD) land: <batch.path><feed>/<day>/."""
    return f"{batch_path}{feed}/{day}/"


def batch_ingest_config(cfg: IngestConfig, batch_path: str, feed: str, day: str) -> IngestConfig:
    """The ingest job's config for a batch run of `feed` on `day`: the landing source on that date's folder only,
    the feed's own job name (its Kafka transactional ids never meet the live job's) and checkpoint folder."""
    from dataclasses import replace

    checkpoints = f"{cfg.checkpoints.directory.rstrip('/')}-batch-{feed}"
    return replace(cfg, landing=replace(cfg.landing, path=batch_folder(batch_path, feed, day)),
                   checkpoints=replace(cfg.checkpoints, directory=checkpoints),
                   runtime=replace(cfg.runtime, job_name=f"medistream-batch-{feed}"))


def load_kafka_auth(groups: Mapping[str, Mapping[str, str]]) -> KafkaAuth:
    """`kafka.security`: plaintext (the default: the local stack) or msk-iam (Amazon MSK's IAM listener), whose
    Python clients sign their tokens for the `s3` group's region (the application's region)."""
    security = PropertyGroup(groups, "kafka").str("security", "plaintext")
    if security not in SECURITY_MODES:
        raise ConfigError(f"property 'kafka.security' is {security!r}; the jobs know {', '.join(SECURITY_MODES)}")
    if security != MSK_IAM:
        return KafkaAuth(security)
    return KafkaAuth(security, PropertyGroup(groups, "s3").str("region"))


def load_s3_config(groups: Mapping[str, Mapping[str, str]]) -> S3Config:
    """The `s3` group: the S3 API endpoint (empty: AWS) and region."""
    s3 = PropertyGroup(groups, "s3")
    return S3Config(endpoint=s3.str("endpoint", ""), region=s3.str("region"),
                    path_style_access=s3.bool("path.style.access", False))


def load_iceberg_config(groups: Mapping[str, Mapping[str, str]]) -> IcebergConfig:
    """The `iceberg` group: the JDBC catalog (needs `uri`) or the Glue Data Catalog (no `uri`)."""
    ice = PropertyGroup(groups, "iceberg")
    impl = ice.str("catalog-impl")
    if impl not in CATALOG_IMPLS:
        raise ConfigError(f"property 'iceberg.catalog-impl' is {impl!r}; the jobs know {', '.join(CATALOG_IMPLS)}")
    jdbc = impl == JDBC_CATALOG
    uri, glue_endpoint = ice.str("uri", ""), ice.str("glue.endpoint", "")
    if jdbc and not uri:
        raise ConfigError("missing property 'iceberg.uri' (the JDBC catalog's database)")
    if not jdbc and uri:
        raise ConfigError("property 'iceberg.uri' is for the JDBC catalog; the Glue catalog takes none: remove it")
    if jdbc and glue_endpoint:
        raise ConfigError("property 'iceberg.glue.endpoint' is for the Glue catalog; catalog-impl is the JDBC one")
    return IcebergConfig(
        catalog_name=ice.str("catalog.name", "lake"),
        catalog_impl=impl,
        uri=uri,
        warehouse=ice.str("warehouse"),
        namespace=ice.str("namespace"),
        table_suffix=ice.str("table.suffix", ""),
        glue_endpoint=glue_endpoint,
    )


def checkpoint_dir(chk: PropertyGroup, deployment: str) -> str:
    """`checkpoints.dir`: where an embedded job keeps checkpoints and savepoints. On a cluster the cluster
    keeps them (Managed Flink its snapshots), so there it may be absent: ""."""
    return chk.str("dir") if deployment == "embedded" else chk.str("dir", "")


def load_deployment(groups: Mapping[str, Mapping[str, str]]) -> str:
    """`runtime.deployment`: embedded (default: the job's own mini-cluster) or cluster."""
    deployment = groups.get("runtime", {}).get("deployment", "embedded")
    if deployment not in DEPLOYMENTS:
        raise ConfigError(f"property 'runtime.deployment' must be one of {', '.join(DEPLOYMENTS)}")
    return deployment


def load_phi_config(groups: Mapping[str, Mapping[str, str]]) -> PhiConfig:
    """The `phi` group: key service endpoint, CMK alias prefix, token-key secret, data-key cache bounds."""
    phi = PropertyGroup(groups, "phi")
    return PhiConfig(
        endpoint=phi.str("endpoint", ""),
        region=phi.str("region"),
        alias_prefix=phi.str("kms.alias.prefix", "alias/medistream/"),
        token_secret=phi.str("token.secret", "medistream/phi/token-keys"),
        data_key_max_uses=phi.int("data.key.max.uses", 1 << 20),
        data_key_max_age_s=float(phi.int("data.key.max.age.s", 300)),
    )
