"""Deliver the curated partner topics to partner REST APIs, exactly once in business effect.

    python -m jobs.partner_delivery [--properties FILE] [--restore DIR | --fresh]

A process-mode PyFlink job (Python async I/O runs only in process mode): one Kafka source per
partner topic `curated.partner.<id>` (read_committed), spread over the subtasks by partner and business
key (one key's versions in one subtask, sent one at a time in topic order), into an
`AsyncDataStream.unordered_wait` whose `AsyncFunction` runs `connectors.partners.sender.PartnerSender`
on aiohttp. Dead letters go to the partner dead-letter topic through an exactly-once Kafka sink.
The ingest job is never back-pressured by a slow partner: it only writes the topic.

Guarantee, precisely. For every record on a partner's curated topic, identified by the idempotency
key `d1-<sha256(partner, business key, record_id)>`:
1. It is acknowledged by the partner, or dead-lettered with a reason, or still pending in the ledger
   (IN_FLIGHT) while the job is down or failing: never silently dropped. A checkpoint completes only
   after every record read before it reached ACKED or DEAD (the async operator drains in-flight
   records before the barrier), so a restore replays every record that may not have finished.
2. A key the ledger holds as ACKED is never sent again: not after a crash, not after a restore from
   any checkpoint or savepoint, not in a backfill that re-reads the topic from the beginning.
3. A key may be sent more than once only while it is IN_FLIGHT and unacknowledged (a crash between
   the partner's answer and the ledger write, a timeout, a retriable error), and then always with the
   same idempotency key and the same body, so a partner that honours the key (our contract requires
   it) applies it once. This is exactly-once in effect, at-least-once on the wire.
4. Dead letters land on the dead-letter topic exactly once per run between checkpoints (Kafka
   transactions); a restore or backfill that replays an already-dead record emits its dead letter
   again with the same `dead_letter_id`, so consumers keep the first per id.
5. The partner's rate limit is divided exactly among the subtasks (udfs.delivery.share), so the
   partner sees at most `burst + rate x T` requests in any T seconds from this job. The job takes
   (1 - `rate.headroom`) of the rate and half the burst, leaving the partner's bucket slack for
   network jitter. A 429 pauses the partner in that subtask for its Retry-After.

Fatal errors (credentials refused after `auth_retries`, a request the partner cannot take at all)
fail the job: Flink restarts it with exponential back-off, and the log says why. Logs, metrics and
dead letters carry partner ids, digests, counts and codes, never record content.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import traceback
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pyflink.datastream import AsyncFunction

from connectors.kafka import PLAINTEXT_AUTH, KafkaAuth, apply_client_properties
from connectors.kms import PhiConfig
from connectors.properties import (
    CheckpointConfig,
    ConfigError,
    PropertyGroup,
    RuntimeConfig,
    S3Config,
    checkpoint_dir,
    default_properties_path,
    load_deployment,
    load_kafka_auth,
    load_phi_config,
    read_property_groups,
)
from schemas.partner_contract import (
    PARTNER_PURPOSE,
    PARTNERS_DIR,
    PartnerContract,
    load_granted_partner_contracts,
    partner_role,
)

log = logging.getLogger("medistream.partner_delivery")
JOB_NAME = "medistream-partner-delivery"
FATAL = "\x00fatal:"  # marks a fatal delivery error on the async operator's output (never a dead letter)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CIRCUIT_LEVELS = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
METRICS = ("delivered", "retried", "dead_lettered", "rate_limited", "skipped_acked", "skipped_dead", "busy_waits",
           "lease_lost")


@dataclass(frozen=True)
class DeliveryConfig:
    """Everything the delivery job needs, validated at start-up (no secrets: those stay in Secrets Manager)."""

    bootstrap_servers: str
    topic_prefix: str
    group_id: str
    dlq_topic: str
    transaction_timeout_ms: int
    contracts: Mapping[str, PartnerContract]
    base_urls: Mapping[str, str]  # partner -> scheme://host:port replacing the contract's (local stand-in)
    ledger_table: str
    capacity: int
    async_timeout_s: int
    rate_headroom: float
    bundle_time_ms: int  # Python bundle: the async operator drains every in-flight record at each bundle end
    phi: PhiConfig
    s3: S3Config
    checkpoints: CheckpointConfig
    runtime: RuntimeConfig
    kafka_auth: KafkaAuth = PLAINTEXT_AUTH  # plaintext locally, IAM on Amazon MSK (decision 0018)

    def topic(self, partner: str) -> str:
        """The curated topic a partner's records arrive on."""
        return f"{self.topic_prefix}{partner}"

    def urls(self, partner: str) -> tuple[str, str | None]:
        """(delivery url, token url) for a partner, with the configured base url applied to both."""
        contract = self.contracts[partner]
        base = self.base_urls.get(partner)
        return rebase(contract.url, base), rebase(contract.auth.token_url, base) if contract.auth.token_url else None


def rebase(url: str, base: str | None) -> str:
    """`url` with its scheme and host:port taken from `base` (None: unchanged)."""
    if not base:
        return url
    target, origin = urlsplit(url), urlsplit(base)
    return urlunsplit((origin.scheme, origin.netloc, target.path, target.query, ""))


def _base_url(partner: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"property 'partners.{partner}.base.url': {value!r} is not an http(s) URL")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError(f"property 'partners.{partner}.base.url': plain http is allowed to loopback only "
                          "(real partners take https)")
    return f"{parts.scheme}://{parts.netloc}"


def load_delivery_config(groups: Mapping[str, Mapping[str, str]]) -> DeliveryConfig:
    """Validate the `kafka`, `curated`, `partners`, `phi`, `s3` and `checkpoints` property groups."""
    from schemas.phi_access import load_access

    kafka, curated, chk = (PropertyGroup(groups, n) for n in ("kafka", "curated", "checkpoints"))
    partners, s3 = PropertyGroup(groups, "partners"), PropertyGroup(groups, "s3")
    directory = Path(partners.str("contracts.dir", "") or PARTNERS_DIR)
    from udfs.contract_checks import check_partner_contracts

    contracts = check_partner_contracts(load_granted_partner_contracts(load_access(), directory))
    for contract in contracts.values():
        if contract.batch_size != 1:
            raise ConfigError(f"{contract.origin}: batch_size {contract.batch_size}: batched partner APIs are not "
                              "supported by the delivery job yet (one record per request)")
    raw = groups.get("partners", {})
    base_urls = {p: _base_url(p, raw[f"{p}.base.url"]) for p in contracts if raw.get(f"{p}.base.url")}
    unknown = sorted(k for k in raw if k.endswith(".base.url") and k.removesuffix(".base.url") not in contracts)
    if unknown:
        raise ConfigError(f"property 'partners.{unknown[0]}': no partner contract of that name in {directory}")
    headroom = float(partners.str("rate.headroom", "0.02"))
    if not 0 <= headroom < 0.5:
        raise ConfigError("property 'partners.rate.headroom' must be in [0, 0.5)")
    parallelism = partners.int("parallelism", 2)
    for contract in contracts.values():
        if contract.burst < parallelism:
            raise ConfigError(f"{contract.origin}: burst {contract.burst} is below the job's parallelism "
                              f"{parallelism}: every subtask needs at least one token")
    deployment = load_deployment(groups)
    shared_dir = checkpoint_dir(chk, deployment)
    default_dir = shared_dir.rstrip("/") + "-partner-delivery" if shared_dir else ""
    return DeliveryConfig(
        bootstrap_servers=kafka.str("bootstrap.servers"),
        topic_prefix=curated.str("partner.topic.prefix", "curated.partner."),
        group_id=partners.str("group.id", "medistream-partner-delivery"),
        dlq_topic=partners.str("dlq.topic", "medistream.dlq.partner"),
        transaction_timeout_ms=kafka.int("transaction.timeout.ms", 600_000),
        contracts=contracts, base_urls=base_urls,
        ledger_table=partners.str("ledger.table", "medistream-delivery-ledger"),
        capacity=partners.int("capacity", 64),
        async_timeout_s=partners.int("async.timeout.s", 600),
        rate_headroom=headroom,
        bundle_time_ms=partners.int("bundle.time.ms", 5000),
        phi=load_phi_config(groups),
        s3=S3Config(endpoint=s3.str("endpoint", ""), region=s3.str("region"),
                    path_style_access=s3.bool("path.style.access", False)),
        checkpoints=CheckpointConfig(directory=partners.str("checkpoints.dir", default_dir),
                                     interval_ms=chk.int("interval.ms", 10_000),
                                     timeout_ms=chk.int("timeout.ms", 120_000),
                                     unaligned=chk.bool("unaligned", True)),
        runtime=RuntimeConfig(parallelism=parallelism, python_execution_mode="process",
                              job_name=partners.str("job.name", JOB_NAME),
                              deployment=deployment),
        kafka_auth=load_kafka_auth(groups),
    )


def audit_reveal_grants(cfg: DeliveryConfig, groups: Mapping[str, Mapping[str, str]]) -> int:
    """Write one audit event per partner and record type whose fields the job will re-identify; returns the count."""
    from connectors.audit import AuditEvent, load_audit_settings, open_audit_log

    events = [(contract, record_type, mapping.reveal) for contract in cfg.contracts.values()
              for record_type, mapping in sorted(contract.payload.items()) if mapping.reveal]
    if not events:
        return 0
    audit = open_audit_log(load_audit_settings(groups))
    for contract, record_type, fields in events:
        audit.append(AuditEvent(
            actor=cfg.runtime.job_name, role=partner_role(contract.partner), purpose=PARTNER_PURPOSE,
            action="partner_reveal_grant", decision="grant", feed=None, record_id=None, fields=tuple(fields),
            reason=f"{contract.origin} reveals {record_type} fields to {contract.partner} (access rules grant)"))
    return len(events)


def preflight(cfg: DeliveryConfig) -> None:
    """Fail before Flink starts: ledger table, every partner's credentials, and the topics."""
    from connectors.kafka import create_missing_topics
    from connectors.kms import aws_client
    from connectors.partners.auth import load_credentials
    from connectors.partners.ledger import ensure_ledger_table

    ensure_ledger_table(aws_client(cfg.phi, "dynamodb"), cfg.ledger_table)
    secrets = aws_client(cfg.phi, "secretsmanager")
    for partner, contract in cfg.contracts.items():
        load_credentials(secrets, contract.auth, partner)
    create_missing_topics(cfg.bootstrap_servers, [*(cfg.topic(p) for p in cfg.contracts), cfg.dlq_topic],
                          auth=cfg.kafka_auth)


def _tagged(partner: str, value: str) -> tuple[str, str]:
    return partner, value


def delivery_key(tagged: tuple[str, str]) -> str:
    """Partner and business key of a tagged curated record: one key's versions go to one subtask, in order."""
    return f"{tagged[0]}\x00{json.loads(tagged[1])['business_key']}"


def make_senders(cfg: DeliveryConfig, index: int, parallelism: int, owner: str,
                 executor: ThreadPoolExecutor) -> dict[str, Any]:
    """One PartnerSender per partner for subtask `index` of `parallelism`: its rate and concurrency shares."""
    from connectors.kms import KmsDataKeys, aws_client
    from connectors.partners.auth import load_credentials
    from connectors.partners.ledger import DeliveryLedger
    from connectors.partners.sender import PartnerSender
    from udfs.delivery import share
    from udfs.phi.envelope import DataKeyCache, unseal
    from udfs.phi.protect import record_context

    ledger = DeliveryLedger(aws_client(cfg.phi, "dynamodb"), cfg.ledger_table)
    secrets = aws_client(cfg.phi, "secretsmanager")
    keys = DataKeyCache(KmsDataKeys(aws_client(cfg.phi, "kms"), cfg.phi.alias_prefix),
                        cfg.phi.data_key_max_uses, cfg.phi.data_key_max_age_s)

    def open_sealed(message: Mapping[str, Any]) -> dict[str, Any]:
        opened: dict[str, Any] = json.loads(
            unseal(keys, message["sealed"], record_context(message["feed"], message["record_id"])))
        return opened

    senders = {}
    for partner, contract in cfg.contracts.items():
        url, token_url = cfg.urls(partner)
        # Headroom: a little less than the rate, and half the burst, so the partner's own bucket keeps slack
        # for network jitter (requests sent evenly can arrive bunched) and never answers 429 for timing alone.
        rate = contract.requests_per_second * (1 - cfg.rate_headroom)
        burst = max(parallelism, contract.burst // 2)
        senders[partner] = PartnerSender(
            contract, url, token_url, load_credentials(secrets, contract.auth, partner), ledger,
            share(rate, burst, index, parallelism), math.ceil(contract.concurrency / parallelism),
            owner, executor, open_sealed)
    return senders


def fail_on_fatal(letter: str) -> str:
    """Pass dead letters on; raise DeliveryFailed (PHI-free) for a fatal marker, failing the task before
    the next checkpoint barrier, so the record is replayed (it is still IN_FLIGHT in the ledger)."""
    from connectors.partners.sender import DeliveryFailed

    if letter.startswith(FATAL):
        raise DeliveryFailed(letter[len(FATAL):])
    return letter


class DeliverFunction(AsyncFunction):  # type: ignore[misc]
    """The AsyncFunction: one PartnerSender per partner in each subtask, sharing one aiohttp session."""

    def __init__(self, cfg: DeliveryConfig) -> None:
        self.cfg = cfg
        self.senders: dict[str, Any] = {}
        self._session: Any = None

    def open(self, ctx: Any) -> None:
        cfg = self.cfg
        index, parallelism = ctx.get_index_of_this_subtask(), ctx.get_number_of_parallel_subtasks()
        owner = f"{cfg.runtime.job_name}/{index}/{ctx.get_attempt_number()}/{uuid.uuid4().hex[:12]}"
        slots = sum(math.ceil(c.concurrency / parallelism) for c in cfg.contracts.values())
        self._executor = ThreadPoolExecutor(max_workers=max(4, slots), thread_name_prefix="ledger")
        self.senders = make_senders(cfg, index, parallelism, owner, self._executor)
        from connectors.metrics.flink_counters import METRIC_GROUP

        group = ctx.get_metrics_group().add_group(METRIC_GROUP)  # the group Managed Flink publishes
        for partner, sender in self.senders.items():
            metrics = group.add_group("partner", partner)
            for name in METRICS:
                metrics.gauge(name, lambda s=sender.stats, n=name: s.counts[n])
            metrics.gauge("latency_p50_ms", lambda s=sender.stats: s.percentile_ms(0.50))
            metrics.gauge("latency_p95_ms", lambda s=sender.stats: s.percentile_ms(0.95))
            # 0 closed, 1 half-open (probing), 2 open: the partner-circuit alert reads it (ops/alerts.yaml).
            metrics.gauge("circuit_state", lambda b=sender.gate.breaker: CIRCUIT_LEVELS[b.state.name])
        log.info("subtask %d/%d delivering to %s as %s", index, parallelism, ", ".join(self.senders), owner)

    async def async_invoke(self, value: Any) -> list[str]:
        # Never raise from here: PyFlink's async operator writes the whole input record into the
        # exception it reports. A fatal error becomes a marker that `fail_on_fatal` raises PHI-free.
        import aiohttp

        from connectors.partners.sender import DeliveryFailed

        partner, text = value[0], value[1]
        try:
            if self._session is None:  # created on the operator's event loop
                self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))
            outcome = await self.senders[partner].deliver(self._session, json.loads(text))
        except DeliveryFailed as err:  # our messages are PHI-free
            return [f"{FATAL}{err}"]
        except Exception as err:  # anything else: its type and frames only, the message might quote data
            log.error("partner %s: %s while delivering, at:\n%s", partner, type(err).__name__,
                      "".join(traceback.format_tb(err.__traceback__)))
            return [f"{FATAL}partner {partner}: {type(err).__name__} while delivering"]
        letter = outcome.dead_letter(time.time_ns() // 1_000_000)
        return [letter] if letter else []

    def timeout(self, value: Any) -> list[str]:
        """PHI-free, unlike the default, which quotes the input record."""
        return [f"{FATAL}partner {value[0]}: a delivery did not finish within {self.cfg.async_timeout_s} s"]

    def close(self) -> None:
        # The operator's event loop is stopped before close(): the session's sockets go with the process.
        self._session = None
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def build(env: Any, cfg: DeliveryConfig) -> None:
    """Sources per partner -> union -> by partner and business key -> async delivery -> exactly-once dead letters."""
    from pyflink.common import Time, Types, WatermarkStrategy
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream import AsyncDataStream
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import (
        KafkaOffsetResetStrategy,
        KafkaOffsetsInitializer,
        KafkaRecordSerializationSchema,
        KafkaSink,
        KafkaSource,
    )

    tagged_type = Types.TUPLE([Types.STRING(), Types.STRING()])
    streams = []
    for partner in sorted(cfg.contracts):
        source = (apply_client_properties(KafkaSource.builder(), cfg.bootstrap_servers, cfg.kafka_auth)
                  .set_topics(cfg.topic(partner))
                  .set_group_id(cfg.group_id)
                  .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST))
                  .set_value_only_deserializer(SimpleStringSchema())
                  .set_property("isolation.level", "read_committed")
                  .set_property("partition.discovery.interval.ms", "10000")
                  .build())
        stream = (env.from_source(source, WatermarkStrategy.no_watermarks(), f"curated-partner-{partner}")
                  .uid(f"source-{partner}")
                  .map(lambda v, p=partner: _tagged(p, v), output_type=tagged_type).uid(f"tag-{partner}"))
        streams.append(stream)
    merged = streams[0].union(*streams[1:]) if len(streams) > 1 else streams[0]
    # By key, not round robin: a business key's versions reach the partner in the order the topic holds them
    # (the sender takes one key's records one at a time); other keys still go out concurrently.
    # (PyFlink's async operator on a keyed stream hands the function (key, value) rows, and partition_custom
    # fails in process mode with "partition number should be a positive value, got -1": so key_by, then
    # a plain map, whose subtask feeds the async operator of the same index.)
    by_key = (merged.key_by(delivery_key, key_type=Types.STRING())
              .map(lambda tagged: tagged, output_type=tagged_type).uid("by-partner-and-key").name("by-key"))
    delivered = AsyncDataStream.unordered_wait(
        by_key, DeliverFunction(cfg), Time.seconds(cfg.async_timeout_s), cfg.capacity, Types.STRING(),
    ).uid("deliver").name("deliver-to-partners")
    sink = (apply_client_properties(KafkaSink.builder(), cfg.bootstrap_servers, cfg.kafka_auth)
            .set_record_serializer(KafkaRecordSerializationSchema.builder().set_topic(cfg.dlq_topic)
                                   .set_value_serialization_schema(SimpleStringSchema()).build())
            .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
            .set_transactional_id_prefix(f"{cfg.runtime.job_name}-dead-letters")
            .set_property("transaction.timeout.ms", str(cfg.transaction_timeout_ms))
            .build())
    (delivered.map(fail_on_fatal, output_type=Types.STRING()).uid("fail-on-fatal").name("fail-on-fatal")
     .sink_to(sink).uid("dead-letters").name("partner-dead-letters"))


def main(argv: list[str] | None = None) -> int:
    """Load config, check dependencies, build, run until stopped; SIGTERM -> stop with savepoint."""
    from jobs.runtime import (
        add_operator_ids_option,
        flink_configuration,
        initialize_filesystems,
        prepare_process_environment,
        restore_point,
        run_submitted,
        write_operator_ids,
    )

    parser = argparse.ArgumentParser(prog="python -m jobs.partner_delivery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--properties", help="application_properties.json (default: MSF path or conf/)")
    parser.add_argument("--restore", help="checkpoint or savepoint to resume from (default: the newest one)")
    parser.add_argument("--fresh", action="store_true", help="start without restoring any state")
    add_operator_ids_option(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    groups = read_property_groups(Path(args.properties) if args.properties else default_properties_path())
    cfg = load_delivery_config(groups)
    preflight(cfg)
    audited = audit_reveal_grants(cfg, groups)
    restore = restore_point(cfg.runtime, cfg.checkpoints, args.restore, args.fresh)
    prepare_process_environment(cfg.runtime)
    from pyflink.datastream import StreamExecutionEnvironment

    # Each Python bundle ends by waiting for every in-flight delivery (that is what makes a checkpoint
    # exact); 1 s bundles (Flink's default) left the rate limit unused for part of every second. Managed
    # Flink takes no python.fn-execution key from code: on a cluster it is the cluster's setting.
    conf = flink_configuration(cfg.checkpoints, cfg.runtime, cfg.s3, restore,
                               cluster_extra={"python.fn-execution.bundle.time": str(cfg.bundle_time_ms)})
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    if cfg.runtime.deployment == "embedded":
        initialize_filesystems(conf)
    build(env, cfg)
    if args.operator_ids:
        return write_operator_ids(env, args.operator_ids)
    client = env.execute_async(cfg.runtime.job_name)
    log.info("job %s delivering to %s (restored from %s; %d reveal grants audited)", client.get_job_id(),
             ", ".join(sorted(cfg.contracts)), restore or "nothing", audited)

    return run_submitted(client, cfg.runtime, cfg.checkpoints, log)


if __name__ == "__main__":
    sys.exit(main())
