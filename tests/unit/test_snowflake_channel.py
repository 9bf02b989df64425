"""Snowflake channels: offset tokens, the local emulator's semantics, the SDK wrapper, loader config."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError
from snowflake.ingest.streaming import StreamingIngestError, StreamingIngestErrorCode

from connectors.properties import LOCAL_PROPERTIES, ConfigError, read_property_groups
from connectors.snowflake.auth import Secret
from connectors.snowflake.channel import (
    ChannelInvalidated,
    Fatal,
    OffsetTokenRegression,
    Retriable,
    channel_name,
    decode_token,
    encode_token,
    resume_offset,
)
from connectors.snowflake.config import SnowflakeConfig, SnowpipeConfig
from connectors.snowflake.emulator import LocalChannelEmulator
from connectors.snowflake.factory import create_channel_factory
from connectors.snowflake.rows import COLUMNS, MalformedRecord, record_row
from connectors.snowflake.sdk import SnowpipeChannelFactory, map_sdk_error
from jobs.snowflake_load import RetryPolicy, kafka_error, load_snowflake_config

PHI = "Jane Q Public 1970-01-01"


def message(record_id: str = "r-1", **overrides: Any) -> bytes:
    doc = {"record_id": record_id, "record_type": "claim", "feed": "acme_837", "business_key": "bk-1",
           "original_key": None, "sent_at_ms": 1_700_000_000_000, "ingested_at_ms": 1_700_000_000_500,
           "source": "kafka:raw.acme_837", "dt": "2026-11-02", "payload": json.dumps({"member": "tok:abc"})}
    return orjson.dumps(doc | overrides)


def rows(first: int, count: int, partition: int = 0) -> list[dict[str, object]]:
    return [record_row(message(f"r-{partition}-{o}"), partition, o, 1) for o in range(first, first + count)]


def stored(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT RECORD_ID, KAFKA_OFFSET FROM RECORDS ORDER BY KAFKA_OFFSET").fetchall()


def token_of(path: Path, name: str) -> str | None:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT OFFSET_TOKEN FROM CHANNELS WHERE CHANNEL_NAME = ?", (name,)).fetchone()
    return None if row is None else row[0]


# Offset tokens -----------------------------------------------------------------------------------

def test_channel_per_partition_and_token_is_the_kafka_offset() -> None:
    assert channel_name("medistream", "curated.snowflake", 3) == "medistream-curated.snowflake-3"
    assert encode_token(0) == "0" and encode_token(123456789012) == "123456789012"
    assert decode_token("42") == 42 and decode_token(None) is None
    assert resume_offset("41") == 42 and resume_offset(None) is None
    for bad in ("", "-1", "01", "4x", "1e3"):
        with pytest.raises(Fatal):
            decode_token(bad)
    with pytest.raises(ValueError):
        encode_token(-1)


# The emulator -------------------------------------------------------------------------------------

def test_append_stores_rows_and_token_together_and_a_new_client_sees_both(tmp_path: Path) -> None:
    path = tmp_path / "sf.sqlite"
    client = LocalChannelEmulator(path)
    channel = client.open_channel("p-0")
    assert channel.latest_committed_offset_token() is None
    channel.append_rows(rows(0, 3), "0", "2")
    channel.append_rows(rows(5, 2), "5", "6")  # gaps (transaction markers, aborted records) are fine
    client.close()

    reopened = LocalChannelEmulator(path).open_channel("p-0")
    assert reopened.latest_committed_offset_token() == "6"
    assert resume_offset(reopened.latest_committed_offset_token()) == 7
    assert [o for _, o in stored(path)] == [0, 1, 2, 5, 6]


def test_a_failing_append_stores_neither_rows_nor_token(tmp_path: Path) -> None:
    path = tmp_path / "sf.sqlite"
    channel = LocalChannelEmulator(path).open_channel("p-0")
    channel.append_rows(rows(0, 2), "0", "1")
    batch = rows(2, 3)
    batch[1]["PAYLOAD"] = {"not": "a column value"}  # fails inside the transaction, after row 2 was inserted
    with pytest.raises(Fatal):
        channel.append_rows(batch, "2", "4")
    assert token_of(path, "p-0") == "1"
    assert [o for _, o in stored(path)] == [0, 1]


def test_tokens_must_advance(tmp_path: Path) -> None:
    path = tmp_path / "sf.sqlite"
    channel = LocalChannelEmulator(path).open_channel("p-0")
    channel.append_rows(rows(0, 10), "0", "9")
    for start, end in (("9", "12"), ("3", "5"), ("0", "0")):
        with pytest.raises(OffsetTokenRegression):
            channel.append_rows(rows(int(start), 1), start, end)
    with pytest.raises(OffsetTokenRegression):
        channel.append_rows(rows(20, 1), "20", "19")
    assert token_of(path, "p-0") == "9" and len(stored(path)) == 10


def test_newer_open_invalidates_the_older_client(tmp_path: Path) -> None:
    path = tmp_path / "sf.sqlite"
    old = LocalChannelEmulator(path).open_channel("p-0")
    old.append_rows(rows(0, 2), "0", "1")
    new = LocalChannelEmulator(path).open_channel("p-0")
    assert new.client_sequencer == old.client_sequencer + 1
    with pytest.raises(ChannelInvalidated):
        old.append_rows(rows(2, 2), "2", "3")
    new.append_rows(rows(2, 2), "2", "3")
    assert [o for _, o in stored(path)] == [0, 1, 2, 3]
    # Other channels are untouched by that open.
    other = LocalChannelEmulator(path).open_channel("p-1")
    other.append_rows(rows(0, 1, partition=1), "0", "0")
    new.close()
    with pytest.raises(ChannelInvalidated):
        new.append_rows(rows(4, 1), "4", "4")


def test_max_rows_per_append_and_exact_columns(tmp_path: Path) -> None:
    channel = LocalChannelEmulator(tmp_path / "sf.sqlite", max_rows_per_append=5).open_channel("p-0")
    with pytest.raises(Fatal, match="limit of 5"):
        channel.append_rows(rows(0, 6), "0", "5")
    missing = rows(0, 1)
    del missing[0]["DT"]
    with pytest.raises(Fatal, match="DT"):
        channel.append_rows(missing, "0", "0")
    extra = rows(0, 1)
    extra[0]["SSN"] = "x"
    with pytest.raises(Fatal, match="SSN"):
        channel.append_rows(extra, "0", "0")
    channel.append_rows(rows(0, 5), "0", "4")


def test_table_name_must_be_an_identifier(tmp_path: Path) -> None:
    with pytest.raises(Fatal):
        LocalChannelEmulator(tmp_path / "sf.sqlite", table="RECORDS; DROP TABLE CHANNELS")


_APPENDER = """
import sys
from connectors.snowflake.emulator import LocalChannelEmulator
from connectors.snowflake.channel import resume_offset
from connectors.snowflake.rows import record_row
VALUE = (b'{"record_id": "r", "record_type": "claim", "feed": "f", "business_key": "b", "original_key": null, '
         b'"sent_at_ms": 1, "ingested_at_ms": 2, "source": "s", "dt": "2026-11-02", "payload": "{}"}')
client = LocalChannelEmulator(sys.argv[1])
channels = [client.open_channel(f"p-{p}") for p in range(2)]
# Resume where each channel committed, as the loader does.
offsets = [resume_offset(c.latest_committed_offset_token()) or 0 for c in channels]
print("ready", flush=True)
while True:
    for p, channel in enumerate(channels):
        first = offsets[p]
        batch = [record_row(VALUE, p, o, 1) for o in range(first, first + 50)]
        channel.append_rows(batch, str(first), str(first + 49))
        offsets[p] = first + 50
"""


def test_sigkill_at_any_moment_leaves_rows_and_tokens_consistent(tmp_path: Path) -> None:
    path = tmp_path / "sf.sqlite"
    root = Path(__file__).resolve().parents[2]
    tokens: list[int] = []
    for kill_after_s in (0.3, 0.55, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", _APPENDER, str(path)], cwd=root, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(kill_after_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        for p in range(2):
            token = token_of(path, f"p-{p}")
            assert token is not None
            with sqlite3.connect(path) as conn:
                count, top, distinct = conn.execute(
                    "SELECT COUNT(*), MAX(KAFKA_OFFSET), COUNT(DISTINCT KAFKA_OFFSET) FROM RECORDS "
                    "WHERE CHANNEL_NAME = ?", (f"p-{p}",)).fetchone()
            # Offsets 0..token are each stored exactly once, nothing beyond the token.
            assert top == int(token) and count == distinct == int(token) + 1
        tokens.append(int(token_of(path, "p-0") or 0))
    assert tokens[0] < tokens[1] < tokens[2], "every run must have appended after resuming"


# Rows from the curated contract -------------------------------------------------------------------

def test_record_row_maps_every_field_and_the_kafka_position() -> None:
    row = record_row(message(), 2, 17, 99)
    assert set(row) == set(COLUMNS)
    assert row["RECORD_ID"] == "r-1" and row["ORIGINAL_KEY"] is None and row["KAFKA_PARTITION"] == 2
    assert row["KAFKA_OFFSET"] == 17 and row["LOADED_AT_MS"] == 99
    assert json.loads(str(row["PAYLOAD"])) == {"member": "tok:abc"}


@pytest.mark.parametrize(("value", "field"), [
    (message(business_key=None), "business_key"),
    (message(sent_at_ms=PHI), "sent_at_ms"),
    (message(ingested_at_ms=True), "ingested_at_ms"),
    (message(record_type=PHI), "record_type"),
    (message(dt=PHI), "dt"),
    (message(payload={"name": PHI}), "payload"),
    (PHI.encode(), "JSON"),
    (None, "no value"),
])
def test_contract_breach_names_the_field_never_the_value(value: bytes | None, field: str) -> None:
    with pytest.raises(MalformedRecord) as err:
        record_row(value, 1, 5, 0)
    assert field in str(err.value) and "offset 5" in str(err.value)
    assert "Jane" not in str(err.value)


# The SDK wrapper, against a fake of Snowflake's service client (the only mock here) ---------------

class FakeSnowflakeServiceClient:
    """Stands in for snowflake.ingest.streaming.StreamingIngestClient: records calls, no network."""

    created: list[FakeSnowflakeServiceClient] = []

    def __init__(self, args: tuple[Any, ...], properties: dict[str, str]) -> None:
        self.args, self.properties = args, properties
        self.channels: dict[str, FakeServiceChannel] = {}
        self.closed_with: dict[str, Any] | None = None
        self.open_error: Exception | None = None

    @classmethod
    def from_table(cls, client_name: str, db: str, schema: str, table: str,
                   properties: dict[str, str]) -> FakeSnowflakeServiceClient:
        client = cls((client_name, db, schema, table), properties)
        cls.created.append(client)
        return client

    def open_channel(self, name: str) -> tuple[FakeServiceChannel, Any]:
        if self.open_error is not None:
            raise self.open_error
        channel = self.channels[name] = FakeServiceChannel()
        return channel, type("Status", (), {"status_code": "SUCCESS"})()

    def close(self, wait_for_flush: bool, timeout_seconds: int) -> None:
        self.closed_with = {"wait_for_flush": wait_for_flush, "timeout_seconds": timeout_seconds}


class FakeServiceChannel:
    def __init__(self) -> None:
        self.appends: list[tuple[list[dict[str, object]], str, str]] = []
        self.token: str | None = "41"
        self.append_error: Exception | None = None
        self.closed_with: dict[str, Any] | None = None

    def get_latest_committed_offset_token(self) -> str | None:
        return self.token

    def append_rows(self, rows: list[dict[str, object]], start: str, end: str) -> None:
        if self.append_error is not None:
            raise self.append_error
        self.appends.append((rows, start, end))

    def close(self, drop: bool, wait_for_flush: bool, timeout_seconds: int) -> None:
        self.closed_with = {"drop": drop, "wait_for_flush": wait_for_flush, "timeout_seconds": timeout_seconds}


PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"


def snowpipe_config() -> SnowflakeConfig:
    return SnowflakeConfig(
        mode="snowpipe", database="MEDISTREAM", schema="CURATED", table="RECORDS", channel_prefix="medistream",
        emulator_path="", emulator_max_rows_per_append=10_000,
        snowpipe=SnowpipeConfig(account="xy12345", user="LOADER", role="LOADER_ROLE",
                                url="https://xy12345.snowflakecomputing.com", private_key_secret="sf/key",
                                secrets_endpoint="", secrets_region="us-east-1", client_name="loader-1",
                                close_timeout_s=7))


def test_sdk_client_uses_table_mode_and_key_pair_auth() -> None:
    factory = SnowpipeChannelFactory(snowpipe_config(), Secret(PEM), client_class=FakeSnowflakeServiceClient)
    client = FakeSnowflakeServiceClient.created[-1]
    assert client.args == ("loader-1", "MEDISTREAM", "CURATED", "RECORDS")
    assert client.properties == {"account": "xy12345", "user": "LOADER", "role": "LOADER_ROLE",
                                 "url": "https://xy12345.snowflakecomputing.com", "authorization_type": "JWT",
                                 "private_key": PEM, "application": "medistream-snowflake-load"}
    channel = factory.open_channel("medistream-curated.snowflake-0")
    assert channel.latest_committed_offset_token() == "41"
    channel.append_rows(rows(42, 2), "42", "43")
    service_channel = client.channels["medistream-curated.snowflake-0"]
    assert [(len(r), s, e) for r, s, e in service_channel.appends] == [(2, "42", "43")]
    channel.close()
    assert service_channel.closed_with == {"drop": False, "wait_for_flush": True, "timeout_seconds": 7}
    factory.close()
    assert client.closed_with == {"wait_for_flush": True, "timeout_seconds": 7}


def sdk_error(code: StreamingIngestErrorCode, status: int) -> StreamingIngestError:
    return StreamingIngestError(code, f"row {PHI} rejected", status, "X")


@pytest.mark.parametrize(("code", "status", "kind"), [
    (StreamingIngestErrorCode.INVALID_CHANNEL_ERROR, 409, ChannelInvalidated),
    (StreamingIngestErrorCode.CLOSED_CHANNEL_ERROR, 409, ChannelInvalidated),
    (StreamingIngestErrorCode.RECEIVER_SATURATED, 429, Retriable),
    (StreamingIngestErrorCode.HTTP_RETRYABLE_CLIENT_ERROR, 503, Retriable),
    (StreamingIngestErrorCode.SF_API_AUTH_ERROR, 401, Fatal),
    (StreamingIngestErrorCode.AUTH_TOKEN_ERROR, 401, Fatal),
    (StreamingIngestErrorCode.CONFIG_ERROR, 400, Fatal),
    (StreamingIngestErrorCode.SF_API_NOT_FOUND_ERROR, 404, Fatal),
])
def test_sdk_errors_map_to_the_taxonomy_without_their_message(code: StreamingIngestErrorCode, status: int,
                                                              kind: type[Exception]) -> None:
    factory = SnowpipeChannelFactory(snowpipe_config(), Secret(PEM), client_class=FakeSnowflakeServiceClient)
    channel = factory.open_channel("c")
    FakeSnowflakeServiceClient.created[-1].channels["c"].append_error = sdk_error(code, status)
    with pytest.raises(kind) as err:
        channel.append_rows(rows(0, 1), "0", "0")
    assert type(err.value) is kind or (kind is Retriable and not isinstance(err.value, ChannelInvalidated))
    assert code.value in str(err.value) and "Jane" not in str(err.value)
    assert isinstance(map_sdk_error(ValueError(PHI), "append"), Fatal)
    assert isinstance(map_sdk_error(TimeoutError(), "close"), Retriable)


def test_secret_is_redacted() -> None:
    secret = Secret(PEM)
    assert "PRIVATE" not in repr(secret) and "PRIVATE" not in str(secret) and "PRIVATE" not in f"{secret}"
    assert "PRIVATE" not in repr(snowpipe_config()) and secret.reveal() == PEM


# Loader configuration and error taxonomy ----------------------------------------------------------

def groups_with(**snowflake: str) -> dict[str, dict[str, str]]:
    groups = read_property_groups(LOCAL_PROPERTIES)
    groups["snowflake"] = groups["snowflake"] | snowflake
    return groups


def test_shipped_properties_load_in_emulator_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDISTREAM_HOME", str(tmp_path))
    cfg = load_snowflake_config(read_property_groups(LOCAL_PROPERTIES))
    assert cfg.topic == "curated.snowflake" and cfg.batch_max_rows == 2000 and cfg.poll_timeout_s == 0.5
    assert cfg.snowflake.mode == "emulator" and cfg.snowflake.snowpipe is None
    assert cfg.snowflake.emulator_path == f"{tmp_path}/snowflake/emulator.sqlite"
    factory = create_channel_factory(cfg.snowflake)
    assert isinstance(factory, LocalChannelEmulator) and Path(cfg.snowflake.emulator_path).is_file()


@pytest.mark.parametrize(("override", "key"), [
    ({"mode": "snowpipe"}, "snowflake.account"),
    ({"mode": "snowpipe", "account": "a", "user": "u", "role": "r"}, "snowflake.secrets.region"),
    ({"mode": "kafka"}, "snowflake.mode"),
    ({"batch.max.rows": "0"}, "snowflake.batch.max.rows"),
    ({"batch.max.rows": "20000"}, "snowflake.batch.max.rows"),
    ({"table": "records"}, "snowflake.table"),
    ({"poll.timeout.ms": "soon"}, "snowflake.poll.timeout.ms"),
])
def test_config_errors_name_the_key(override: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_snowflake_config(groups_with(**override))


def test_snowpipe_mode_config() -> None:
    cfg = load_snowflake_config(groups_with(mode="snowpipe", account="xy12345", user="u", role="r",
                                            **{"secrets.region": "eu-west-1"}))
    assert cfg.snowflake.snowpipe is not None
    assert cfg.snowflake.snowpipe.url == "https://xy12345.snowflakecomputing.com"
    assert cfg.snowflake.snowpipe.private_key_secret == "medistream/snowflake/private-key"


def test_kafka_errors_and_backoff() -> None:
    assert isinstance(kafka_error(KafkaError(KafkaError._ALL_BROKERS_DOWN)), Retriable)
    assert isinstance(kafka_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)), Fatal)
    assert isinstance(kafka_error(KafkaError(KafkaError._FENCED, fatal=True)), Fatal)
    policy = RetryPolicy(max_attempts=5, base_s=0.5, max_s=4.0)
    delays = [policy.delay(n) for n in range(1, 9) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays) and max(delays) > 2.0 and len(set(delays)) > 100
