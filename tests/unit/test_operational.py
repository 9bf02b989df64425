"""The operational store's definitions (connectors/operational.py): its columns are the Iceberg tables' own plus the
version, its connection is TLS-verified from a secret, and the `operational` route is a contract sink."""

from __future__ import annotations

import pytest

from connectors.operational import (
    OperationalStoreError,
    connection,
    flink_columns,
    jdbc_url,
    operational_tables,
    postgres_columns,
    postgres_type,
)
from connectors.properties import ConfigError, OperationalConfig, load_operational_config
from schemas.contracts import load_contracts
from udfs.iceberg_columns import ICEBERG_COLUMNS


@pytest.mark.parametrize("table", sorted(operational_tables().values()))
def test_each_table_has_the_iceberg_tables_columns_in_order_then_the_version(table: str) -> None:
    names = [name for name, _ in flink_columns(table)]
    assert names == [*ICEBERG_COLUMNS[table], "sent_at_ms"]  # the sink's INSERT lists them in this order
    assert "business_key" in names and len(postgres_columns(table)) == len(names)


def test_types_map_one_to_one_and_an_unknown_type_is_refused() -> None:
    assert [postgres_type(t) for t in ("STRING", "INT", "BIGINT", "DATE", "TIMESTAMP_LTZ(3)", "DECIMAL(14, 2)")] \
        == ["text", "integer", "bigint", "date", "timestamp with time zone", "numeric(14,2)"]
    with pytest.raises(ValueError, match="no PostgreSQL type for Flink type 'ARRAY<STRING>'"):
        postgres_type("ARRAY<STRING>")


def test_the_connection_is_always_tls_verified() -> None:
    cfg = load_operational_config({})
    assert (cfg.secret_id, cfg.sslmode) == ("medistream/operational/ops_writer", "verify-full")
    assert cfg.sslrootcert.endswith("/postgres/tls/ca.crt")
    url = jdbc_url({"host": "127.0.0.1", "port": 15432, "dbname": "medistream"}, cfg)
    assert url.startswith("jdbc:postgresql://127.0.0.1:15432/medistream?sslmode=verify-full&sslrootcert=")
    for weaker in ("disable", "require", "prefer"):
        with pytest.raises(ConfigError, match="always verified"):
            load_operational_config({"operational": {"sslmode": weaker}})


class _Secrets:
    def __init__(self, text: str) -> None:
        self.text = text

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        return {"SecretString": self.text}


def test_a_secret_without_its_fields_is_refused_without_quoting_it() -> None:
    with pytest.raises(OperationalStoreError, match=r"no dbname, password") as refused:
        connection(_Secrets('{"host": "h", "port": 1, "username": "ops_writer", "x": "s3cr3t"}'), "id")
    assert "s3cr3t" not in str(refused.value)
    assert connection(_Secrets('{"host": "h", "port": 1, "dbname": "d", "username": "u", "password": "p"}'),
                      "id")["dbname"] == "d"


def test_shipped_contracts_route_one_feed_of_each_record_type_to_the_store() -> None:
    routed = {c.record_type for c in load_contracts().values() if any(r.sink == "operational" for r in c.routes)}
    assert routed == set(operational_tables())
    assert OperationalConfig().flush_rows > 0
