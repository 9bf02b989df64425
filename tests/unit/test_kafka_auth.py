"""Kafka auth: plaintext (the local default) leaves every client as it was; msk-iam gives every Kafka table and
every confluent-kafka client the IAM settings; the Python token is presigned offline."""

from __future__ import annotations

import base64
import socket
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors.kafka import (
    MSK_IAM,
    PLAINTEXT_AUTH,
    KafkaAuth,
    KafkaConfig,
    client_config,
    curated_sink_options,
    dead_letter_sink_options,
    jvm_client_properties,
    raw_source_options,
)
from connectors.properties import LOCAL_PROPERTIES, ConfigError, load_ingest_config, read_property_groups

BROKERS = "b-1.medistream.abc123.c2.kafka.eu-west-1.amazonaws.com:9098"
IAM = KafkaAuth(MSK_IAM, "eu-west-1")
JVM_IAM = {
    "properties.security.protocol": "SASL_SSL",
    "properties.sasl.mechanism": "AWS_MSK_IAM",
    "properties.sasl.jaas.config": "software.amazon.msk.auth.iam.IAMLoginModule required;",
    "properties.sasl.client.callback.handler.class": "software.amazon.msk.auth.iam.IAMClientCallbackHandler",
}


def _config(auth: KafkaAuth) -> KafkaConfig:
    return KafkaConfig(BROKERS, r"raw\..*", "medistream.dlq", "medistream-ingest", 600_000, auth=auth)


def _tables(cfg: KafkaConfig) -> dict[str, dict[str, str]]:
    return {"raw": raw_source_options(cfg), "dlq": dead_letter_sink_options(cfg, "medistream-ingest"),
            "curated": curated_sink_options(cfg, "curated.snowflake", "medistream-ingest-curated")}


def test_plaintext_tables_are_exactly_as_before() -> None:
    """The options the ingest job's three Kafka tables had before auth existed (and the curated batching), in order."""
    tables = _tables(_config(PLAINTEXT_AUTH))
    assert list(tables["raw"].items()) == [
        ("connector", "kafka"), ("topic-pattern", r"raw\..*"), ("properties.bootstrap.servers", BROKERS),
        ("properties.group.id", "medistream-ingest"), ("properties.isolation.level", "read_committed"),
        ("scan.startup.mode", "group-offsets"), ("properties.auto.offset.reset", "earliest"),
        ("scan.topic-partition-discovery.interval", "5 s"), ("format", "raw")]
    assert list(tables["dlq"].items()) == [
        ("connector", "kafka"), ("topic", "medistream.dlq"), ("properties.bootstrap.servers", BROKERS),
        ("properties.transaction.timeout.ms", "600000"), ("sink.delivery-guarantee", "exactly-once"),
        ("sink.transactional-id-prefix", "medistream-ingest-dlq"), ("key.format", "raw"),
        ("key.fields", "dead_letter_id"), ("value.format", "raw"), ("value.fields-include", "EXCEPT_KEY")]
    assert list(tables["curated"].items()) == [
        ("connector", "kafka"), ("topic", "curated.snowflake"), ("properties.bootstrap.servers", BROKERS),
        ("properties.transaction.timeout.ms", "600000"), ("sink.delivery-guarantee", "exactly-once"),
        ("sink.transactional-id-prefix", "medistream-ingest-curated"), ("key.format", "raw"),
        ("key.fields", "message_key"), ("value.format", "raw"), ("value.fields-include", "EXCEPT_KEY"),
        ("properties.batch.size", "524288"), ("properties.linger.ms", "50")]  # batching: decision 0022


def test_msk_iam_adds_the_iam_settings_to_every_table_and_changes_nothing_else() -> None:
    plain, iam = _tables(_config(PLAINTEXT_AUTH)), _tables(_config(IAM))
    for name in plain:
        assert iam[name] == plain[name] | JVM_IAM, name


def test_jvm_clients_plaintext_and_msk_iam() -> None:
    assert jvm_client_properties(BROKERS, PLAINTEXT_AUTH) == {"bootstrap.servers": BROKERS}
    assert jvm_client_properties(BROKERS, IAM) == {"bootstrap.servers": BROKERS} | {
        k.removeprefix("properties."): v for k, v in JVM_IAM.items()}


def test_confluent_clients_plaintext_is_unchanged_and_settings_pass_through() -> None:
    assert client_config(BROKERS, PLAINTEXT_AUTH) == {"bootstrap.servers": BROKERS}
    assert client_config(BROKERS, PLAINTEXT_AUTH, **{"group.id": "g", "acks": "all"}) == {
        "bootstrap.servers": BROKERS, "group.id": "g", "acks": "all"}


def test_confluent_clients_msk_iam_use_sasl_ssl_oauthbearer_with_a_token_callback() -> None:
    config = client_config(BROKERS, IAM, **{"group.id": "g"})
    assert {k: v for k, v in config.items() if k != "oauth_cb"} == {
        "bootstrap.servers": BROKERS, "security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "group.id": "g"}
    assert callable(config["oauth_cb"])
    with pytest.raises(ValueError, match="region"):
        client_config(BROKERS, KafkaAuth(MSK_IAM))


def test_librdkafka_takes_the_msk_iam_configuration_for_each_client_kind() -> None:
    """Admin, producer and consumer accept the keys (librdkafka refuses unknown or misspelled ones at creation)."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    settings: dict[str, Any] = {"socket.timeout.ms": 1000, "log_level": 0}
    AdminClient(client_config("127.0.0.1:1", IAM, **settings))
    Producer(client_config("127.0.0.1:1", IAM, **settings)).flush(0)
    Consumer(client_config("127.0.0.1:1", IAM, **settings, **{"group.id": "msk-iam-check"})).close()


def test_the_token_is_presigned_offline_from_static_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAMEDISTREAMTEST01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "medistream/static/test/secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")

    def no_network(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the token provider tried to open a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    before = time.time()
    token, expiry_s = client_config(BROKERS, IAM)["oauth_cb"]("")
    url = urlsplit(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    query = parse_qs(url.query)
    assert (url.scheme, url.netloc) == ("https", "kafka.eu-west-1.amazonaws.com")
    assert query["Action"] == ["kafka-cluster:Connect"]
    assert query["X-Amz-Credential"][0].startswith("AKIAMEDISTREAMTEST01/")
    assert query["X-Amz-Credential"][0].endswith("/eu-west-1/kafka-cluster/aws4_request")
    assert len(query["X-Amz-Signature"][0]) == 64
    assert "medistream/static/test/secret" not in token
    # confluent-kafka wants the expiry in seconds since the epoch; the signer's tokens live 900 s.
    assert before + 890 <= expiry_s <= time.time() + 901


def test_the_setting_is_read_where_the_kafka_config_is_loaded() -> None:
    groups = read_property_groups(LOCAL_PROPERTIES)
    assert load_ingest_config(groups).kafka.auth == PLAINTEXT_AUTH  # the local default
    groups["kafka"] = {**groups["kafka"], "security": "msk-iam"}
    assert load_ingest_config(groups).kafka.auth == KafkaAuth(MSK_IAM, groups["s3"]["region"])
    groups["kafka"]["security"] = "sasl-scram"
    with pytest.raises(ConfigError, match=r"property 'kafka.security' is 'sasl-scram'; the jobs know plaintext, "
                                          r"msk-iam"):
        load_ingest_config(groups)


def test_production_authenticates_with_iam_in_its_region() -> None:
    from tests.unit.test_environments import MANIFEST, VALUES, as_groups
    from tools.package import application_properties

    for job in ("ingest", "partner_delivery"):
        groups = as_groups(application_properties("production", job, MANIFEST, values=VALUES))
        assert groups["kafka"]["security"] == "msk-iam"
    cfg = load_ingest_config(as_groups(application_properties("production", "ingest", MANIFEST, values=VALUES)))
    assert cfg.kafka.auth == KafkaAuth(MSK_IAM, "eu-west-1")
