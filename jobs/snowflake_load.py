"""Load the curated.snowflake topic into Snowflake, exactly once, through offset-token channels.

    python -m jobs.snowflake_load [--properties FILE] [--until-idle SECONDS]

One channel per Kafka partition (`<prefix>-<topic>-<partition>`); the offset token is the Kafka
offset. On assignment each partition resumes at its channel's committed token + 1, so a restart
after SIGKILL loads nothing twice and loses nothing (connectors/snowflake/channel.py). Kafka's
consumer-group offsets are never committed or used: the channel's token is the only position.

The consumer reads read_committed: rows of aborted producer transactions never load. A channel
that fails (invalidated, throttled) is reopened and its partition rewound to the committed token.
Retriable failures back off with full jitter for a bounded number of attempts, then the job fails
(exit 1); Fatal ones (auth, config, contract breach) exit 2. SIGTERM finishes the current batch,
closes the channels (flushing them) and exits 0. Logs carry counts, never record content.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from connectors.kafka import PLAINTEXT_AUTH, KafkaAuth, client_config, watermark_offsets
from connectors.lineage.datasets import Dataset, topic_datasets
from connectors.lineage.emitter import lineage_run
from connectors.metrics.doors import DoorMetrics
from connectors.properties import (
    ConfigError,
    PropertyGroup,
    default_properties_path,
    load_kafka_auth,
    read_property_groups,
)
from connectors.snowflake.channel import (
    Channel,
    ChannelFactory,
    Fatal,
    Retriable,
    SnowflakeError,
    channel_name,
    encode_token,
    resume_offset,
)
from connectors.snowflake.config import EMULATOR, MODES, SNOWPIPE, SnowflakeConfig, SnowpipeConfig
from connectors.snowflake.factory import create_channel_factory
from connectors.snowflake.rows import record_row

log = logging.getLogger("medistream.snowflake_load")
T = TypeVar("T")
PROGRESS_EVERY_S = 10.0
LAG_EVERY_S = 5.0  # how often the loader measures how far Snowflake is behind the curated topic
_TRANSIENT_KAFKA = {
    KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._RESOLVE,
    KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR,
}
_AUTH_KAFKA = {
    KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError._SSL,
}


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter."""

    max_attempts: int
    base_s: float
    max_s: float

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based): uniform in [0, min(max, base * 2^(n-1))]."""
        return random.uniform(0, min(self.max_s, self.base_s * 2 ** (attempt - 1)))  # noqa: S311 - jitter, not crypto


@dataclass(frozen=True)
class LoaderConfig:
    """Everything the loader needs, validated at start-up."""

    bootstrap_servers: str
    topic: str
    group_id: str
    group_instance_id: str  # "" = dynamic membership; set it for fast restarts (static membership)
    session_timeout_ms: int
    batch_max_rows: int
    poll_timeout_s: float
    retry: RetryPolicy
    snowflake: SnowflakeConfig
    kafka_auth: KafkaAuth = PLAINTEXT_AUTH


class LoadFailed(Exception):
    """Retriable failures outlasted the retry budget; the job exits 1."""


@dataclass
class LoadStats:
    """What a run loaded: rows and appends per partition, and how often it recovered."""

    rows: dict[int, int] = field(default_factory=dict)
    appends: int = 0
    recoveries: int = 0

    @property
    def total_rows(self) -> int:
        """Rows appended over all partitions."""
        return sum(self.rows.values())


def load_snowflake_config(groups: Mapping[str, Mapping[str, str]]) -> LoaderConfig:
    """Validate the `kafka`, `curated` and `snowflake` property groups for the loader."""
    kafka, curated = PropertyGroup(groups, "kafka"), PropertyGroup(groups, "curated")
    sf = PropertyGroup(groups, "snowflake")
    mode = sf.str("mode", EMULATOR)
    if mode not in MODES:
        raise ConfigError(f"property 'snowflake.mode' must be one of {', '.join(MODES)}")
    snowpipe = None
    if mode == SNOWPIPE:
        account = sf.str("account")
        snowpipe = SnowpipeConfig(
            account=account, user=sf.str("user"), role=sf.str("role"),
            url=sf.str("url", f"https://{account}.snowflakecomputing.com"),
            private_key_secret=sf.str("private.key.secret"),
            secrets_endpoint=sf.str("secrets.endpoint", ""), secrets_region=sf.str("secrets.region"),
            client_name=sf.str("client.name", "medistream-snowflake-load"),
            close_timeout_s=sf.int("close.timeout.s", 60),
        )
    table = sf.str("table", "RECORDS")
    if not table.replace("_", "").isalnum() or not table.isupper():
        raise ConfigError("property 'snowflake.table' must be an upper-case identifier")
    batch_max_rows = sf.int("batch.max.rows", 2000)
    max_per_append = sf.int("emulator.max.rows.per.append", 10_000)
    if mode == EMULATOR and batch_max_rows > max_per_append:
        raise ConfigError("property 'snowflake.batch.max.rows' exceeds 'snowflake.emulator.max.rows.per.append'")
    return LoaderConfig(
        bootstrap_servers=kafka.str("bootstrap.servers"),
        topic=curated.str("snowflake.topic"),
        group_id=sf.str("consumer.group.id", "medistream-snowflake-load"),
        group_instance_id=sf.str("consumer.group.instance.id", ""),
        session_timeout_ms=sf.int("consumer.session.timeout.ms", 10_000),
        batch_max_rows=batch_max_rows,
        poll_timeout_s=sf.int("poll.timeout.ms", 500) / 1000,
        retry=RetryPolicy(max_attempts=sf.int("retry.max.attempts", 10), base_s=sf.int("retry.base.ms", 500) / 1000,
                          max_s=sf.int("retry.max.ms", 30_000) / 1000),
        snowflake=SnowflakeConfig(
            mode=mode, database=sf.str("database", "MEDISTREAM"), schema=sf.str("schema", "CURATED"), table=table,
            channel_prefix=sf.str("channel.prefix", "medistream"),
            emulator_path=sf.str("emulator.path") if mode == EMULATOR else "",
            emulator_max_rows_per_append=max_per_append, snowpipe=snowpipe,
        ),
        kafka_auth=load_kafka_auth(groups),
    )


def kafka_error(err: KafkaError) -> SnowflakeError:
    """The taxonomy for a Kafka client error: auth and fatal errors stop, the rest are retried (bounded)."""
    what = f"kafka {err.name()}"
    if err.fatal() or err.code() in _AUTH_KAFKA:
        return Fatal(what)
    return Retriable(what)


class _Loader:
    """The consume → append loop's state: one channel per assigned partition, partitions to recover."""

    def __init__(self, cfg: LoaderConfig, factory: ChannelFactory) -> None:
        self.cfg, self.factory = cfg, factory
        self.channels: dict[int, Channel] = {}
        self.pending: set[int] = set()  # partitions whose channel must be reopened and position rewound
        self.stats = LoadStats()
        self.metrics: DoorMetrics | None = None
        self.callback_error: SnowflakeError | None = None
        self.brokers_suspect = False
        settings: dict[str, Any] = {
            "group.id": cfg.group_id,
            "isolation.level": "read_committed", "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": cfg.session_timeout_ms,
            "error_cb": self._on_error,
        }
        if cfg.group_instance_id:
            settings["group.instance.id"] = cfg.group_instance_id
        self.consumer = Consumer(client_config(cfg.bootstrap_servers, cfg.kafka_auth, **settings))
        self.consumer.subscribe([cfg.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)

    # Rebalance and error callbacks run inside consume(): they never raise, they record.
    def _on_error(self, err: KafkaError) -> None:
        if err.fatal() or err.code() in _AUTH_KAFKA:
            self.callback_error = kafka_error(err)
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.brokers_suspect = True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            try:
                tp.offset = self._open(tp.partition)
            except SnowflakeError as err:
                log.warning("partition %d: channel open failed (%s); will retry", tp.partition, err)
                self.pending.add(tp.partition)
        consumer.assign(partitions)
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.pending.discard(tp.partition)
            channel = self.channels.pop(tp.partition, None)
            if channel is not None:
                try:
                    channel.close()
                except SnowflakeError as err:
                    log.warning("partition %d: channel close failed (%s)", tp.partition, err)
        log.info("revoked partitions %s", sorted(tp.partition for tp in partitions))

    def _open(self, partition: int) -> int:
        """Open the partition's channel; the Kafka offset to resume at (after its committed token)."""
        channel = self.factory.open_channel(channel_name(self.cfg.snowflake.channel_prefix, self.cfg.topic, partition))
        self.channels[partition] = channel
        offset = resume_offset(channel.latest_committed_offset_token())
        return OFFSET_BEGINNING if offset is None else offset

    def recover_pending(self) -> None:
        """Reopen failed channels and rewind their partitions to the committed token + 1."""
        for partition in sorted(self.pending):
            old = self.channels.pop(partition, None)
            if old is not None:
                try:
                    old.close()
                except SnowflakeError:
                    pass  # the handle is already invalid; reopening below supersedes it
            offset = self._open(partition)
            try:
                self.consumer.seek(TopicPartition(self.cfg.topic, partition, offset))
            except KafkaException as err:
                raise Retriable(f"seek of partition {partition}: {err.args[0].name()}") from None
            self.pending.discard(partition)
            self.stats.recoveries += 1
            log.info("partition %d: channel reopened, resuming at offset %d", partition, offset)

    def check_brokers(self) -> None:
        """After a transport error, probe the cluster; Retriable while it cannot be reached."""
        if self.callback_error is not None:
            err, self.callback_error = self.callback_error, None
            raise err
        if self.brokers_suspect:
            try:
                self.consumer.list_topics(self.cfg.topic, timeout=5)
            except KafkaException:
                raise Retriable("kafka brokers unreachable") from None
            self.brokers_suspect = False

    def load(self, messages: list[Message]) -> int:
        """Append the batch per partition (one append each); the rows appended."""
        batches: dict[int, list[Message]] = {}
        error: KafkaError | None = None
        for message in messages:
            if message.error() is not None:
                error = error or message.error()
            elif message.topic() == self.cfg.topic:
                batches.setdefault(_int(message.partition()), []).append(message)
        loaded, now_ms = 0, int(time.time() * 1000)
        for partition, batch in batches.items():
            channel = self.channels.get(partition)
            if channel is None or partition in self.pending:
                continue  # revoked, or to be rewound: these messages are read again after the seek
            rows = [record_row(m.value(), partition, _int(m.offset()), now_ms) for m in batch]
            try:
                channel.append_rows(rows, encode_token(_int(batch[0].offset())), encode_token(_int(batch[-1].offset())))
            except Retriable as err:
                log.warning("partition %d: append failed (%s); channel will be reopened", partition, err)
                self.pending.add(partition)
                continue
            self.stats.rows[partition] = self.stats.rows.get(partition, 0) + len(rows)
            self.stats.appends += 1
            if self.metrics is not None:
                for feed, n in Counter(str(r.get("FEED")) for r in rows).items():
                    self.metrics.moved(feed, n, "loaded")
                taken = [t for r in rows if isinstance(t := r.get("INGESTED_AT_MS"), int)]
                if taken:  # the rows and their token are committed: this is the sink's freshness
                    self.metrics.delay.labels("snowflake").set(max(0, int(time.time() * 1000) - min(taken)) / 1000)
            loaded += len(rows)
        if error is not None and error.code() != KafkaError._PARTITION_EOF:
            raise kafka_error(error)
        if self.pending:
            raise Retriable(f"{len(self.pending)} channel(s) to reopen")
        return loaded

    def lag(self) -> int:
        """Messages of the assigned partitions not yet loaded (high watermark minus position)."""
        behind = 0
        for tp in self.consumer.position(self.consumer.assignment()):
            _low, high = watermark_offsets(self.consumer, tp, 2.0)
            if tp.offset >= 0:
                behind += max(0, high - tp.offset)
        return behind

    def close(self) -> None:
        """Close the consumer (revoking: closes the channels, which flushes them), then the client."""
        try:
            self.consumer.close()
        finally:
            for channel in self.channels.values():
                try:
                    channel.close()
                except SnowflakeError as err:
                    log.warning("channel %s: close failed (%s)", channel.name, err)
            self.channels.clear()
            self.factory.close()


def _int(value: int | None) -> int:
    # A consumed message (no error) always has a partition and an offset; None would be a client bug.
    if value is None:
        raise Fatal("kafka returned a message without partition or offset")
    return value


def _retrying(policy: RetryPolicy, stop: threading.Event, what: str, call: Callable[[], T]) -> T:
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return call()
        except Retriable as err:
            if attempt == policy.max_attempts or stop.is_set():
                raise LoadFailed(f"{what}: gave up after {attempt} attempts: {err}") from None
            log.warning("%s failed (%s); retry %d/%d", what, err, attempt, policy.max_attempts - 1)
            stop.wait(policy.delay(attempt))
    raise LoadFailed(f"{what}: no attempts configured")


def run(cfg: LoaderConfig, stop_event: threading.Event, max_idle_s: float | None = None,
        factory: ChannelFactory | None = None) -> LoadStats:
    """Load until stop_event is set (or, with max_idle_s, until no record arrived for that long)."""
    channels = factory or _retrying(cfg.retry, stop_event, "opening the Snowflake client",
                                    lambda: create_channel_factory(cfg.snowflake))
    loader = _Loader(cfg, channels)
    metrics = loader.metrics = DoorMetrics("snowflake_load")
    metrics.serve()
    failures, last_data, last_report, reported, last_lag = 0, time.monotonic(), time.monotonic(), 0, 0.0
    try:
        while not stop_event.is_set():
            try:
                loader.recover_pending()
                messages = loader.consumer.consume(cfg.batch_max_rows, timeout=cfg.poll_timeout_s)
                loader.check_brokers()
                if loader.load(messages):
                    last_data = time.monotonic()
                failures = 0
            except KafkaException as err:
                metrics.errors.labels("all", "kafka").inc()
                failures = _back_off(cfg, stop_event, kafka_error(err.args[0]), failures + 1)
                last_data = time.monotonic()
                continue
            except Retriable as err:
                metrics.errors.labels("all", "retriable").inc()
                failures = _back_off(cfg, stop_event, err, failures + 1)
                last_data = time.monotonic()
                continue
            now = time.monotonic()
            if now - last_lag >= LAG_EVERY_S:
                last_lag = now
                with contextlib.suppress(KafkaException):  # a lag reading is not worth a failure
                    metrics.lag.labels("snowflake").set(loader.lag())
            if now - last_report >= PROGRESS_EVERY_S and loader.stats.total_rows != reported:
                reported, last_report = loader.stats.total_rows, now
                log.info("loaded %d rows in %d appends (by partition %s)", reported, loader.stats.appends,
                         dict(sorted(loader.stats.rows.items())))
            if max_idle_s is not None and now - last_data >= max_idle_s:
                log.info("no new records for %.1f s: stopping (--until-idle)", max_idle_s)
                break
    finally:
        loader.close()
        metrics.close()
    log.info("done: %d rows in %d appends, %d channel recoveries", loader.stats.total_rows,
             loader.stats.appends, loader.stats.recoveries)
    return loader.stats


def _back_off(cfg: LoaderConfig, stop: threading.Event, err: SnowflakeError, failures: int) -> int:
    if isinstance(err, Fatal):
        raise err
    if failures >= cfg.retry.max_attempts:
        raise LoadFailed(f"gave up after {failures} consecutive failures; last: {err}")
    delay = cfg.retry.delay(failures)
    log.warning("retriable failure %d/%d (%s); backing off %.2f s", failures, cfg.retry.max_attempts, err, delay)
    stop.wait(delay)
    return failures


def snowflake_dataset(cfg: SnowflakeConfig) -> Dataset:
    """The loader's table, as OpenLineage names a Snowflake table (the emulator's: a local SQLite file)."""
    if cfg.snowpipe is None:
        return Dataset(f"file://{cfg.emulator_path}", f"{cfg.database}.{cfg.schema}.{cfg.table}")
    return Dataset(f"snowflake://{cfg.snowpipe.account}", f"{cfg.database}.{cfg.schema}.{cfg.table}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: load config, run until SIGTERM/SIGINT (or idle), exit 0 / 1 (retries spent) / 2 (fatal)."""
    parser = argparse.ArgumentParser(prog="python -m jobs.snowflake_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--properties", type=Path, default=None, help="MSF application_properties.json")
    parser.add_argument("--until-idle", type=float, default=None, metavar="SECONDS",
                        help="exit 0 once no record arrived for SECONDS (topic drained)")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        groups = read_property_groups(args.properties or default_properties_path())
        cfg = load_snowflake_config(groups)
        with lineage_run("snowflake_load", groups, topic_datasets(cfg.bootstrap_servers, [cfg.topic]),
                         [snowflake_dataset(cfg.snowflake)]):
            stats = run(cfg, stop, max_idle_s=args.until_idle)
    except (ConfigError, Fatal) as err:
        log.error("fatal: %s", err)
        return 2
    except LoadFailed as err:
        log.error("failed: %s", err)
        return 1
    print(f"loaded {stats.total_rows} rows in {stats.appends} appends", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
