"""Kafka: the raw.<feed> source, the transactional dead-letter sink and the curated hand-off topics.

Guarantees: the source's offsets live in Flink checkpoints, so after a restore it re-reads from the
last completed checkpoint. The dead-letter and curated sinks write in Kafka transactions that commit
when the checkpoint holding them completes: a read_committed consumer sees each record exactly once,
at a stable partition and offset (what the Snowflake loader's offset tokens and the partner
delivery's ledger build on).

Every Kafka client, JVM or Python, gets its connection settings from one function per side:
`jvm_client_properties` (Flink's Kafka tables, sources and sinks) and `client_config` (confluent-kafka).
`KafkaAuth` says how they authenticate: `plaintext` (the local stack) or `msk-iam` (Amazon MSK's IAM
listener: TLS, SASL AWS_MSK_IAM on the JVM, SASL OAUTHBEARER with a locally presigned token in Python).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors.sql import with_clause

if TYPE_CHECKING:
    from pyflink.table import StreamTableEnvironment

RAW_TABLE = "raw_kafka"
DLQ_TABLE = "dead_letters"

PLAINTEXT, MSK_IAM = "plaintext", "msk-iam"
SECURITY_MODES = (PLAINTEXT, MSK_IAM)
# aws-msk-iam-auth's classes, as named to the Kafka client inside lib/pyflink-dependencies.jar (pom.xml relocates
# their Kafka interfaces to the connector's shaded client; decision 0018).
MSK_IAM_LOGIN_MODULE = "software.amazon.msk.auth.iam.IAMLoginModule"
MSK_IAM_CALLBACK_HANDLER = "software.amazon.msk.auth.iam.IAMClientCallbackHandler"


@dataclass(frozen=True)
class KafkaAuth:
    """How clients authenticate to the brokers: `plaintext` (no TLS, no SASL) or `msk-iam` (IAM, in `region`)."""

    security: str = PLAINTEXT
    region: str = ""  # msk-iam: the region the Python clients' tokens are signed for


PLAINTEXT_AUTH = KafkaAuth()


@dataclass(frozen=True)
class KafkaConfig:
    """Broker access and the topics the ingest job reads and writes."""

    bootstrap_servers: str
    raw_topic_pattern: str
    dlq_topic: str
    group_id: str
    transaction_timeout_ms: int
    # Bounded: read up to the offsets current at start, then finish (tests and benchmarks).
    bounded: bool = False
    auth: KafkaAuth = PLAINTEXT_AUTH


def jvm_client_properties(bootstrap_servers: str, auth: KafkaAuth) -> dict[str, str]:
    """The Kafka client properties of every JVM client (Flink table, KafkaSource, KafkaSink): brokers and auth.

    msk-iam: TLS with the JVM's trust store (MSK's certificates chain to public roots) and the AWS_MSK_IAM
    mechanism, signing with the default AWS credentials chain (the application's role on Managed Flink).
    """
    properties = {"bootstrap.servers": bootstrap_servers}
    if auth.security == MSK_IAM:
        properties |= {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "AWS_MSK_IAM",
            "sasl.jaas.config": f"{MSK_IAM_LOGIN_MODULE} required;",
            "sasl.client.callback.handler.class": MSK_IAM_CALLBACK_HANDLER,
        }
    elif auth.security != PLAINTEXT:
        raise ValueError(f"unknown Kafka security mode {auth.security!r}")
    return properties


def apply_client_properties(builder: Any, bootstrap_servers: str, auth: KafkaAuth) -> Any:
    """Set `jvm_client_properties` on a PyFlink KafkaSource or KafkaSink builder; returns the builder."""
    for key, value in jvm_client_properties(bootstrap_servers, auth).items():
        builder.set_property(key, value)
    return builder


def _table_client_options(cfg: KafkaConfig) -> dict[str, str]:
    return {f"properties.{key}": value for key, value in jvm_client_properties(cfg.bootstrap_servers, cfg.auth).items()}


def msk_iam_token_callback(region: str) -> Callable[[Any], tuple[str, float]]:
    """confluent-kafka's `oauth_cb` for MSK IAM: a token presigned locally (no network call) from the default
    AWS credentials chain, and its expiry in seconds since the epoch (the signer gives milliseconds)."""

    def oauth_cb(_config: Any) -> tuple[str, float]:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
        return token, expiry_ms / 1000

    return oauth_cb


def client_config(bootstrap_servers: str, auth: KafkaAuth, **settings: Any) -> dict[str, Any]:
    """The configuration of every confluent-kafka client (admin, producer, consumer): brokers, auth, `settings`."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers}
    if auth.security == MSK_IAM:
        if not auth.region:
            raise ValueError("Kafka security msk-iam needs the region its tokens are signed for")
        config |= {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
                   "oauth_cb": msk_iam_token_callback(auth.region)}
    elif auth.security != PLAINTEXT:
        raise ValueError(f"unknown Kafka security mode {auth.security!r}")
    return config | settings


@dataclass(frozen=True)
class CuratedConfig:
    """The curated topics the delivery jobs read: one for Snowflake, one per partner (prefix + id)."""

    snowflake_topic: str
    partner_topic_prefix: str

    def partner_topic(self, partner: str) -> str:
        """The curated topic of one partner."""
        return f"{self.partner_topic_prefix}{partner}"


def raw_source_options(cfg: KafkaConfig) -> dict[str, str]:
    """The raw source table's connector options."""
    options = {
        "connector": "kafka",
        "topic-pattern": cfg.raw_topic_pattern,
        **_table_client_options(cfg),
        "properties.group.id": cfg.group_id,
        "properties.isolation.level": "read_committed",
        "scan.startup.mode": "group-offsets",
        "properties.auto.offset.reset": "earliest",
        "scan.topic-partition-discovery.interval": "5 s",
        "format": "raw",
    }
    if cfg.bounded:
        options["scan.bounded.mode"] = "latest-offset"
    return options


def create_raw_source(t_env: StreamTableEnvironment, cfg: KafkaConfig) -> str:
    """Register the raw topics (by pattern) as a table of bytes with topic/partition/offset."""
    t_env.execute_sql(
        f"""CREATE TEMPORARY TABLE {RAW_TABLE} (
              payload BYTES,
              topic STRING NOT NULL METADATA VIRTUAL,
              `partition` INT NOT NULL METADATA VIRTUAL,
              `offset` BIGINT NOT NULL METADATA VIRTUAL,
              `timestamp` TIMESTAMP_LTZ(3) NOT NULL METADATA VIRTUAL,
              headers MAP<STRING, BYTES> METADATA VIRTUAL
            ) {with_clause(raw_source_options(cfg))}"""
    )
    return RAW_TABLE


def dead_letter_sink_options(cfg: KafkaConfig, job_name: str) -> dict[str, str]:
    """The dead-letter sink table's connector options."""
    return {
        "connector": "kafka",
        "topic": cfg.dlq_topic,
        **_table_client_options(cfg),
        "properties.transaction.timeout.ms": str(cfg.transaction_timeout_ms),
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"{job_name}-dlq",
        "key.format": "raw",
        "key.fields": "dead_letter_id",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }


def create_dead_letter_sink(t_env: StreamTableEnvironment, cfg: KafkaConfig, job_name: str) -> str:
    """Register the dead-letter topic as an exactly-once (transactional) sink keyed by dead-letter id."""
    t_env.execute_sql(
        f"""CREATE TEMPORARY TABLE {DLQ_TABLE} (
              dead_letter_id STRING,
              body STRING
            ) {with_clause(dead_letter_sink_options(cfg, job_name))}"""
    )
    return DLQ_TABLE


# A curated record is read when the transaction holding it commits (read_committed), at the checkpoint, so batching
# the sends costs no visible latency. With Kafka's default 16 KiB batches a 4-12 KB curated record began a new batch
# on nearly every send, and each new batch woke the producer's I/O thread (decision 0022). A batch stays below the
# broker's default 1 MiB message limit.
CURATED_BATCHING = {"properties.batch.size": str(512 * 1024), "properties.linger.ms": "50"}


def curated_sink_options(cfg: KafkaConfig, topic: str, transactional_id_prefix: str) -> dict[str, str]:
    """A curated sink table's connector options."""
    return {
        "connector": "kafka",
        "topic": topic,
        **_table_client_options(cfg),
        "properties.transaction.timeout.ms": str(cfg.transaction_timeout_ms),
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": transactional_id_prefix,
        "key.format": "raw",
        "key.fields": "message_key",
        # The value is the curated JSON the ingest operator built (udfs.curated.curated_value, decision 0046).
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        **CURATED_BATCHING,
    }


def create_curated_sink(t_env: StreamTableEnvironment, cfg: KafkaConfig, table: str, topic: str,
                        transactional_id_prefix: str) -> str:
    """Register one curated topic as an exactly-once sink of (message_key, value): the key raw, the value the curated
    JSON as bytes (CURATED_COLUMNS or PARTNER_CURATED_COLUMNS, built by udfs.curated.curated_value)."""
    options = curated_sink_options(cfg, topic, transactional_id_prefix)
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {table} (`message_key` STRING, `value` BYTES) {with_clause(options)}")
    return table


def create_missing_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    partitions: int = 2,
    replication: int = 1,
    timeout_s: float = 30.0,
    admin_config: Mapping[str, Any] | None = None,
    auth: KafkaAuth = PLAINTEXT_AUTH,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Raises ConnectionError when the broker does not answer, and confluent_kafka.KafkaException when
    it refuses a creation (a topic created by someone else meanwhile is not an error).
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported, undeclared

    admin = AdminClient(client_config(bootstrap_servers, auth, **(admin_config or {})))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise ConnectionError(f"Kafka unreachable at {bootstrap_servers} within {timeout_s:.0f} s: {exc}") from exc
    wanted = [n for n in dict.fromkeys(names) if n not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=replication) for n in wanted],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def watermark_offsets(consumer: Any, partition: Any, timeout_s: float, pause_s: float = 0.5) -> tuple[int, int]:
    """A partition's (low, high) watermark offsets, asked again while its leadership is still settling.

    Every Python reader of a topic's ends goes through here. Seen in a whole-suite run: NOT_LEADER_FOR_PARTITION
    from a topic the job had just created. Any other error, or the same one past `timeout_s`, is raised.
    """
    import time

    from confluent_kafka import KafkaError, KafkaException

    # Partition leadership still moving (a topic just created, a broker just restarted): asking again answers.
    leadership = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                  KafkaError.UNKNOWN_TOPIC_OR_PART}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=max(deadline - time.monotonic(), pause_s))
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            settling = isinstance(error, KafkaError) and (error.retriable() or error.code() in leadership)
            if not settling or time.monotonic() + pause_s > deadline:
                raise
            time.sleep(pause_s)
