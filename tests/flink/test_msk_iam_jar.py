"""MSK IAM on the JVM side: the jar's IAM classes load as `jvm_client_properties` names them, fit the Kafka client
the connector ships (relocated to org.apache.flink.kafka.shaded), and sign an authentication payload offline."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.kafka import MSK_IAM, KafkaAuth, jvm_client_properties

pytestmark = pytest.mark.flink

SHADED = "org.apache.flink.kafka.shaded.org.apache.kafka"
BROKER = "b-1.medistream.abc123.c2.kafka.eu-west-1.amazonaws.com"
PROPERTIES = jvm_client_properties(f"{BROKER}:9098", KafkaAuth(MSK_IAM, "eu-west-1"))
KEY_ID, SECRET = "AKIAMEDISTREAMTEST01", "medistream/static/test/secret/not/a/real/one/000"


@pytest.fixture(scope="module")
def jvm(flink_process_env: None) -> Iterator[tuple[Any, Any]]:
    """(gateway, class loader) with lib/pyflink-dependencies.jar on the thread's context class loader, as a job has."""
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import add_jars_to_context_class_loader

    from jobs.runtime import DEPENDENCIES_JAR

    add_jars_to_context_class_loader([DEPENDENCIES_JAR.as_uri()])
    gateway = get_gateway()
    yield gateway, gateway.jvm.Thread.currentThread().getContextClassLoader()


def _load(jvm: tuple[Any, Any], name: str) -> Any:
    gateway, loader = jvm
    return gateway.jvm.java.lang.Class.forName(name, True, loader)


def _java_properties(gateway: Any, values: dict[str, str]) -> Any:
    props = gateway.jvm.java.util.Properties()
    for key, value in values.items():
        props.setProperty(key, value)
    return props


def test_configured_classes_load_and_implement_the_shaded_client_interfaces(jvm: tuple[Any, Any]) -> None:
    login_module = re.fullmatch(r"(\S+) required;", PROPERTIES["sasl.jaas.config"])
    assert login_module is not None
    module = _load(jvm, login_module.group(1))
    handler = _load(jvm, PROPERTIES["sasl.client.callback.handler.class"])
    assert _load(jvm, "javax.security.auth.spi.LoginModule").isAssignableFrom(module)
    # The cast SaslChannelBuilder makes: it failed with the plain aws-msk-iam-auth jar (aws-msk-iam-auth#129, #190).
    assert _load(jvm, f"{SHADED}.common.security.auth.AuthenticateCallbackHandler").isAssignableFrom(handler)
    with pytest.raises(Exception, match="ClassNotFoundException"):
        _load(jvm, "org.apache.kafka.common.security.auth.AuthenticateCallbackHandler")


def test_the_shaded_kafka_client_accepts_the_msk_iam_properties(jvm: tuple[Any, Any]) -> None:
    """Creating a client builds its SASL channel: the JAAS login with IAMLoginModule and the callback handler's
    instantiation and cast. Nothing is listening on the address, so no connection is made."""
    gateway, _ = jvm
    values = PROPERTIES | {"bootstrap.servers": "127.0.0.1:1", "client.id": "medistream-msk-iam-check"}
    admin = getattr(gateway.jvm, f"{SHADED}.clients.admin.AdminClient").create(_java_properties(gateway, values))
    admin.close(gateway.jvm.java.time.Duration.ofSeconds(5))


def test_the_iam_sasl_client_signs_a_payload_offline(jvm: tuple[Any, Any]) -> None:
    """The AWS_MSK_IAM SASL client's first message, from static credentials: SigV4 for kafka-cluster:Connect on
    the broker's host in its region (no network: the credentials are JVM system properties)."""
    gateway, loader = jvm
    system = gateway.jvm.java.lang.System
    system.setProperty("aws.accessKeyId", KEY_ID)
    system.setProperty("aws.secretAccessKey", SECRET)
    try:
        _load(jvm, "software.amazon.msk.auth.iam.IAMLoginModule")  # registers the AWS_MSK_IAM SASL provider
        handler = (_load(jvm, PROPERTIES["sasl.client.callback.handler.class"])
                   .getDeclaredConstructor(gateway.new_array(gateway.jvm.Class, 0))
                   .newInstance(gateway.new_array(gateway.jvm.Object, 0)))
        flag = getattr(gateway.jvm, "javax.security.auth.login.AppConfigurationEntry$LoginModuleControlFlag").REQUIRED
        entry = gateway.jvm.javax.security.auth.login.AppConfigurationEntry(
            "software.amazon.msk.auth.iam.IAMLoginModule", flag, gateway.jvm.java.util.HashMap())
        entries = gateway.jvm.java.util.ArrayList()
        entries.add(entry)
        handler.configure(gateway.jvm.java.util.HashMap(), "AWS_MSK_IAM", entries)
        mechanisms = gateway.new_array(gateway.jvm.String, 1)
        mechanisms[0] = "AWS_MSK_IAM"
        gateway.jvm.Thread.currentThread().setContextClassLoader(loader)
        client = gateway.jvm.javax.security.sasl.Sasl.createSaslClient(
            mechanisms, None, "kafka", BROKER, gateway.jvm.java.util.HashMap(), handler)
        # The class-loader-aware provider (one registration per job class loader) names it AWS_MSK_IAM.<loader>.
        assert client is not None and client.getMechanismName().startswith("AWS_MSK_IAM")
        payload = json.loads(bytes(client.evaluateChallenge(gateway.new_array(gateway.jvm.byte, 0))))
        # The default chain's first static source: the gateway's environment (the local stack's placeholder
        # keys, set before the JVM started) or else the system properties set here.
        key_id = system.getenv("AWS_ACCESS_KEY_ID") or KEY_ID
    finally:
        system.clearProperty("aws.accessKeyId")
        system.clearProperty("aws.secretAccessKey")
    assert payload["action"] == "kafka-cluster:Connect"
    assert payload["host"] == BROKER
    scope = rf"{re.escape(key_id)}/\d{{8}}/eu-west-1/kafka-cluster/aws4_request"
    assert re.fullmatch(scope, payload["x-amz-credential"])
    assert payload["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert re.fullmatch(r"[0-9a-f]{64}", payload["x-amz-signature"])
    assert SECRET not in json.dumps(payload)
    assert payload["user-agent"].startswith("aws-msk-iam-auth/2.4.0/aws-sdk-java/")


def test_datastream_kafka_source_and_sink_carry_the_msk_iam_properties(jvm: tuple[Any, Any]) -> None:
    """`apply_client_properties` on PyFlink's builders: the built Java source's and sink's client properties."""
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink, KafkaSource

    from connectors.kafka import apply_client_properties

    auth, brokers = KafkaAuth(MSK_IAM, "eu-west-1"), PROPERTIES["bootstrap.servers"]
    source = (apply_client_properties(KafkaSource.builder(), brokers, auth).set_topics("t").set_group_id("g")
              .set_value_only_deserializer(SimpleStringSchema()).build())
    assert dict(source.get_java_function().getConfiguration().toMap()).items() >= PROPERTIES.items()
    sink = (apply_client_properties(KafkaSink.builder(), brokers, auth)
            .set_record_serializer(KafkaRecordSerializationSchema.builder().set_topic("d")
                                   .set_value_serialization_schema(SimpleStringSchema()).build()).build())
    j_sink = sink.get_java_function()
    config = j_sink.getClass().getDeclaredField("kafkaProducerConfig")
    config.setAccessible(True)
    assert dict(config.get(j_sink)).items() >= PROPERTIES.items()
