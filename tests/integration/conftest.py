"""Fixtures for integration tests against the real local stack (Kafka broker, moto server)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from infra.local.isolation import write_properties  # noqa: F401 - re-exported to tests


def pytest_configure(config: pytest.Config) -> None:
    """Register the integration marker (harmless if pyproject registers it too)."""
    config.addinivalue_line("markers", "integration: needs the local stack (Kafka, moto)")


def wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(1)


@pytest.fixture(scope="session")
def packaged_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Managed Flink zip of HEAD (Python 3.12), built once for every test that runs or inspects it (read-only:
    a test that alters a zip writes its own copy), signed with the local release key as `medistream sign` signs
    it (deploy refuses an unsigned zip, decision 0031)."""
    from tools.attest import sign_local
    from tools.package import Target, build

    return sign_local(build(Target("3.12"), tmp_path_factory.mktemp("dist")))


@pytest.fixture(scope="session")
def runtime_python() -> Path:
    """The Managed-Flink-like Python 3.12 runtime (only apache-flink) the packaged zip runs on."""
    from tools.deploy import ensure_runtime

    return ensure_runtime()


def land_device_events(contracts: Mapping[str, Any], bootstrap: str, n: int, seed: int) -> dict[str, list[Any]]:
    """`n` generated device events per device-event feed of `contracts`, produced to its raw topic as the Kinesis
    door lands them (the door itself has tests of its own: test_kinesis_pull); returns the events by feed."""
    from infra.local.device_events import RECORD_TYPE, generate_device_events, produce_to_kafka

    landed = {}
    for feed, contract in contracts.items():
        if contract.record_type == RECORD_TYPE:
            landed[feed] = generate_device_events(n, seed=seed, devices=8, feed=feed)
            produce_to_kafka(landed[feed], bootstrap, f"raw.{feed}")
    return landed


def with_device_events(expected: dict[str, Any], landed: Mapping[str, list[Any]], contracts: Mapping[str, Any],
                       digest: Any) -> dict[str, Any]:
    """The ground truth `expected` with that of the device events landed by land_device_events."""
    from infra.local.ground_truth import device_outcome, merge_outcomes

    for feed, events in landed.items():
        expected = merge_outcomes(expected, device_outcome(events, contracts[feed], digest))
    return expected


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every committed message of a topic, all partitions, from the beginning to the current end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from connectors.kafka import watermark_offsets

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: watermark_offsets(consumer, TopicPartition(topic, p), 10) for p in partitions}
        assigned = [TopicPartition(topic, p, OFFSET_BEGINNING) for p, (low, high) in ends.items() if high > low]
        if not assigned:
            return []
        consumer.assign(assigned)
        messages: list[Any] = []
        deadline = time.monotonic() + 30
        while any(tp.offset < ends[tp.partition][1] for tp in consumer.position(assigned)):
            assert time.monotonic() < deadline, f"{topic} stopped short of its end"
            message = consumer.poll(0.5)
            if message is not None:
                assert not message.error(), message.error()
                messages.append(message)
        return sorted(messages, key=lambda m: (m.partition(), m.offset()))
    finally:
        consumer.close()


@pytest.fixture
def audit_table(stack: Any) -> Iterator[str]:
    """A new audit table (the hash chain's DynamoDB table) for one test, deleted afterwards."""
    from connectors.audit import ensure_audit_table
    from infra.local import moto_server

    name = f"audit-test-{uuid.uuid4().hex[:12]}"
    client = moto_server.client(stack, "dynamodb")
    ensure_audit_table(client, name)
    try:
        yield name
    finally:
        client.delete_table(TableName=name)
