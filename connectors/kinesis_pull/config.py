"""The `kinesis_pull` property group, validated at start-up; errors name the bad key."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from connectors.kafka import MSK_IAM
from connectors.properties import ConfigError, PropertyGroup, load_kafka_auth, load_phi_config

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
RAW_PREFIX = "raw."
# Kinesis stream names and KCL application names (the lease table's name): DynamoDB's table-name rules.
NAME = re.compile(r"^[A-Za-z0-9_.-]{3,128}$")
FEED = re.compile(r"^[a-z0-9_]+$")
KNOWN = frozenset({"stream", "application", "feed", "cursor.topic", "transactional.id.prefix", "max.records",
                   "idle.between.reads.ms", "failover.time.ms", "shard.sync.interval.ms", "parent.shard.poll.ms",
                   "shutdown.timeout.ms", "retry.max.attempts", "retry.backoff.ms", "cloudwatch.metrics",
                   "worker.id", "heap"})


@dataclass(frozen=True)
class KinesisPullConfig:
    """Everything the Kinesis door needs: the stream, its KCL application, the feed it lands on, Kafka, AWS."""

    stream: str
    application: str  # KCL application name = the DynamoDB lease table (KCL adds -CoordinatorState, -WorkerMetricStats)
    feed: str
    cursor_topic: str
    transactional_id_prefix: str
    bootstrap_servers: str
    region: str
    endpoint: str  # "" in AWS (the SDK's own endpoints); the local API's URL otherwise
    max_records: int = 1000
    idle_between_reads_ms: int = 200
    failover_time_ms: int = 10_000
    # KCL sleeps this long after each shard sync too, its first one at start-up included (60 s by default).
    shard_sync_interval_ms: int = 10_000
    parent_shard_poll_ms: int = 10_000
    shutdown_timeout_ms: int = 20_000
    retry_max_attempts: int = 6
    retry_backoff_ms: int = 500
    cloudwatch_metrics: bool = False
    # Unique per live worker, stable across its restarts: a restarted worker finds the leases it owned and resumes
    # at once, where a new id waits for KCL 3's leader to reassign them (its DynamoDB lock lasts 2 minutes).
    worker_id: str = ""
    heap: str = "384m"

    @property
    def raw_topic(self) -> str:
        """The topic the stream's records land on."""
        return f"{RAW_PREFIX}{self.feed}"

    @property
    def local(self) -> bool:
        """Is the AWS API the local one (loopback endpoint)?"""
        return bool(self.endpoint) and urlsplit(self.endpoint).hostname in LOOPBACK_HOSTS


def load_kinesis_pull_config(groups: Mapping[str, Mapping[str, str]]) -> KinesisPullConfig:
    """Validate the `kinesis_pull`, `kafka` and `phi` groups (AWS region and endpoint come from `phi`)."""
    group = PropertyGroup(groups, "kinesis_pull")
    for key in groups["kinesis_pull"]:
        if key not in KNOWN:
            raise ConfigError(f"property 'kinesis_pull.{key}' is unknown")
    stream, feed = group.str("stream"), group.str("feed")
    application = group.str("application", f"medistream-kinesis-pull-{feed}")
    for key, value in (("stream", stream), ("application", application)):
        if not NAME.match(value):
            raise ConfigError(f"property 'kinesis_pull.{key}' must be 3-128 of A-Z a-z 0-9 _ . -")
    if not FEED.match(feed):
        raise ConfigError("property 'kinesis_pull.feed' must be a feed name (a-z 0-9 _)")
    if load_kafka_auth(groups).security == MSK_IAM:
        raise ConfigError("property 'kafka.security' is msk-iam: the Kinesis door's JVM has no MSK IAM login module "
                          "yet (decision 0039)")
    phi = load_phi_config(groups)
    endpoint = phi.endpoint
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("property 'phi.endpoint' is not an http(s) URL")
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise ConfigError("property 'phi.endpoint': plain http is allowed to loopback only")
    heap = group.str("heap", "384m")
    if not re.match(r"^[0-9]+[mg]$", heap):
        raise ConfigError("property 'kinesis_pull.heap' must look like 384m or 1g")
    return KinesisPullConfig(
        stream=stream, application=application, feed=feed,
        cursor_topic=group.str("cursor.topic", "medistream.kinesis.cursors"),
        transactional_id_prefix=group.str("transactional.id.prefix", "medistream-kinesis-pull"),
        bootstrap_servers=PropertyGroup(groups, "kafka").str("bootstrap.servers"),
        region=phi.region, endpoint=endpoint,
        max_records=min(group.int("max.records", 1000), 10_000),  # GetRecords returns at most 10,000
        idle_between_reads_ms=max(group.int("idle.between.reads.ms", 200), 200),  # KCL's floor
        failover_time_ms=group.int("failover.time.ms", 10_000),
        shard_sync_interval_ms=group.int("shard.sync.interval.ms", 10_000),
        parent_shard_poll_ms=group.int("parent.shard.poll.ms", 10_000),
        shutdown_timeout_ms=group.int("shutdown.timeout.ms", 20_000),
        retry_max_attempts=group.int("retry.max.attempts", 6),
        retry_backoff_ms=group.int("retry.backoff.ms", 500),
        cloudwatch_metrics=group.bool("cloudwatch.metrics", False),
        worker_id=group.str("worker.id", socket.gethostname()), heap=heap)
