"""Integration tests: the local stack's Kafka transactions, moto provisioning, and up/down."""

from __future__ import annotations

import shutil
import socket
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest

from infra.local import kafka, moto_server, postgres
from infra.local import stack as local_stack
from infra.local.process import port_is_free
from infra.local.settings import StackSettings

pytestmark = pytest.mark.integration


def _read_all(
    settings: StackSettings, topic: str, isolation: str, timeout_s: float = 30.0
) -> list[str]:
    """Every value in partition 0 of topic visible at this isolation level, in offset order."""
    from confluent_kafka import Consumer, KafkaError

    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers(),
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    values: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        consumer.subscribe([topic])
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    return values
                raise AssertionError(f"consumer error: {msg.error()}")
            values.append(msg.value().decode())
    finally:
        consumer.close()
    raise AssertionError(f"no end of partition within {timeout_s}s; read so far: {values}")


def test_kafka_transactions_commit_and_abort(stack: StackSettings) -> None:
    from confluent_kafka import Producer

    topic = f"stack-tx-{uuid.uuid4().hex[:8]}"
    assert kafka.ensure_topics(stack, [topic], partitions=1) == [topic]
    assert kafka.ensure_topics(stack, [topic], partitions=1) == []  # idempotent

    producer = Producer(
        {
            "bootstrap.servers": stack.bootstrap_servers(),
            "transactional.id": f"stack-test-{uuid.uuid4()}",
            "enable.idempotence": True,
        }
    )
    producer.init_transactions(30)

    def batch(values: list[str], commit: bool) -> None:
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value=value.encode(), partition=0)
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    committed_1 = [f"committed-{i}" for i in range(5)]
    aborted = [f"aborted-{i}" for i in range(3)]
    committed_2 = [f"committed-{i}" for i in range(5, 7)]
    batch(committed_1, commit=True)
    batch(aborted, commit=False)
    batch(committed_2, commit=True)

    assert _read_all(stack, topic, "read_committed") == committed_1 + committed_2
    # The aborted records were really written; only the isolation level hides them.
    assert _read_all(stack, topic, "read_uncommitted") == committed_1 + aborted + committed_2


def test_moto_buckets_and_archive_encryption(stack: StackSettings) -> None:
    s3 = moto_server.client(stack, "s3")
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert set(stack.buckets()) <= names

    rule = s3.get_bucket_encryption(Bucket=stack.archive_bucket)[
        "ServerSideEncryptionConfiguration"
    ]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    assert rule["SSEAlgorithm"] == "aws:kms"
    kms = moto_server.client(stack, "kms")
    alias_key = kms.describe_key(KeyId=stack.archive_kms_alias)["KeyMetadata"]["Arn"]
    assert rule["KMSMasterKeyID"] == alias_key

    key = f"stack-test/{uuid.uuid4()}.txt"
    body = b"synthetic claim archive payload"
    put = s3.put_object(Bucket=stack.archive_bucket, Key=key, Body=body)
    assert put["ServerSideEncryption"] == "aws:kms"
    got = s3.get_object(Bucket=stack.archive_bucket, Key=key)
    assert got["Body"].read() == body
    s3.delete_object(Bucket=stack.archive_bucket, Key=key)

    assert stack.iceberg_dir.is_dir()


def _free_ports(count: int) -> list[int]:
    with ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def test_second_stack_up_down_leaves_nothing(stack: StackSettings, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_port, controller_port, moto_port, postgres_port = _free_ports(4)
    monkeypatch.setenv(postgres.ENV_PORT, str(postgres_port))  # its own operational store, beside the session's
    other = StackSettings(
        home=tmp_path / "home",
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        moto_port=moto_port,
    )
    if kafka.is_installed(stack):
        # Reuse the fetched jars; a fresh Maven copy would only test Maven.
        other.kafka_dir.mkdir(parents=True)
        other.kafka_libs_dir.symlink_to(stack.kafka_libs_dir)

    try:
        first = local_stack.up(other)
        assert first.healthy, first.as_dict()
        assert first.kafka.pid and first.moto.pid and first.postgres and first.postgres.pid
        assert first.postgres.endpoint == f"postgresql://127.0.0.1:{postgres_port}/medistream"
        again = local_stack.up(other)  # already up: starts nothing new
        assert again.postgres and again.postgres.pid == first.postgres.pid and again.postgres.started_in_s is None
        assert (again.kafka.pid, again.moto.pid) == (first.kafka.pid, first.moto.pid)
        assert again.kafka.started_in_s is None and again.moto.started_in_s is None
        assert moto_server.client(other, "s3").head_bucket(Bucket=other.archive_bucket)
    finally:
        stopped = local_stack.down(other)
        shutil.rmtree(postgres.PostgresSettings.from_env(other.home).folder, ignore_errors=True)  # its data

    # The observers (Prometheus, Alertmanager, the lineage store) keep their ports when another home starts: the
    # session stack's own hold them, so this stack started none of its own and stops none.
    observers = {"prometheus": None, "alertmanager": None, "lineage": None}
    assert stopped == {"kafka": first.kafka.pid, "moto": first.moto.pid, "postgres": first.postgres.pid, **observers}
    for pid in (first.kafka.pid, first.moto.pid, first.postgres.pid):
        assert pid is not None and not psutil.pid_exists(pid)
    for port in (kafka_port, controller_port, moto_port, postgres_port):
        assert port_is_free(port), f"port {port} still bound after down"
    assert not list(other.run_dir.glob("*.pid"))
    after = local_stack.status(other)
    assert not after.kafka.running and not after.moto.running and not after.healthy
    assert local_stack.down(other) == {"kafka": None, "moto": None, "postgres": None, **observers}  # a no-op
    # The session stack on the default ports was not touched.
    monkeypatch.undo()  # its operational store's port again
    assert local_stack.status(stack).healthy


def test_archive_storage_policy_is_what_the_s3_api_accepts_and_returns(stack: StackSettings) -> None:
    from infra.storage_policy import ARCHIVE, lifecycle_configuration, object_lock_configuration

    moto_server.provision(stack)  # idempotent; applies the declared policy to a stack started earlier
    s3 = moto_server.client(stack, "s3")
    rule = s3.get_bucket_lifecycle_configuration(Bucket=stack.archive_bucket)["Rules"][0]
    assert rule["Transitions"] == [{"Days": 30, "StorageClass": "GLACIER_IR"}]
    assert rule["Expiration"]["Days"] > 7 * 365
    # Object lock needs a lock-enabled bucket (AWS applies it at creation): a scratch one shows the
    # declared body is valid and that a locked version cannot be deleted before its retention ends.
    bucket = f"lock-check-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=object_lock_configuration())
    got = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    assert (got["Mode"], got["Days"]) == ("COMPLIANCE", ARCHIVE.retention_days)
    version = s3.put_object(Bucket=bucket, Key="part-0.avro", Body=b"sealed")["VersionId"]
    with pytest.raises(s3.exceptions.ClientError):
        s3.delete_object(Bucket=bucket, Key="part-0.avro", VersionId=version)
    assert lifecycle_configuration()["Rules"][0]["Status"] == "Enabled"
