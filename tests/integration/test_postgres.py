"""The operational store's local server (infra/local/postgres.py): 127.0.0.1 and TLS only, least-privilege roles whose
passwords live in Secrets Manager, migrations that match connectors/operational.py and run once, the newest-version
rule in the tables, and data that outlives a restart. A private server (its own home and port) for what changes
state; the session stack's own for what it must show."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from connectors.operational import SIGNALS_TABLE, operational_tables, postgres_columns
from infra.local import moto_server, postgres
from infra.local.process import StackError, free_loopback_port
from infra.local.settings import StackSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def private(stack: StackSettings, tmp_path: Path) -> Iterator[tuple[postgres.PostgresSettings, dict[str, Any]]]:
    """A server of its own, provisioned, its roles' secrets under a run-unique prefix in the local Secrets Manager."""
    home = tmp_path / "home"
    home.mkdir()
    settings = postgres.PostgresSettings(home, free_loopback_port())
    secrets = moto_server.client(stack, "secretsmanager")
    prefix = f"test-{uuid.uuid4().hex[:8]}/operational/"
    try:
        postgres.start(settings)  # inside: a start that fails still stops what it launched and removes its folder
        applied = postgres.provision(settings, secrets, secret_prefix=prefix)
        docs = {role: json.loads(secrets.get_secret_value(SecretId=prefix + role)["SecretString"])
                for role in postgres.ROLES}
        yield settings, {"applied": applied, "docs": docs, "secrets": secrets, "prefix": prefix}
    finally:
        postgres.stop(settings)
        shutil.rmtree(settings.folder, ignore_errors=True)  # under root, outside tmp_path (the server's own folder)
        for role in postgres.ROLES:
            secrets.delete_secret(SecretId=prefix + role, ForceDeleteWithoutRecovery=True)


def _as(settings: postgres.PostgresSettings, doc: dict[str, Any], **kwargs: Any) -> Any:
    return postgres.connect(settings, user=doc["username"], password=doc["password"], autocommit=True, **kwargs)


def test_the_stacks_server_listens_on_loopback_only_and_its_roles_secrets_are_there(stack: StackSettings) -> None:
    settings = postgres.PostgresSettings.from_env(stack.home)
    pid = postgres.status(settings)["pid"]
    assert pid is not None
    server, listening = psutil.Process(pid), set()
    for proc in (server, *server.children()):
        try:
            listening |= {c.laddr for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:  # a session's backend that ended meanwhile
            continue
    assert {addr.ip for addr in listening} == {"127.0.0.1"} and {addr.port for addr in listening} == {settings.port}
    secrets = moto_server.client(stack, "secretsmanager")
    for role in postgres.ROLES:
        doc = json.loads(secrets.get_secret_value(SecretId=postgres.SECRET_PREFIX + role)["SecretString"])
        assert (doc["engine"], doc["host"], doc["port"], doc["username"]) == ("postgres", "127.0.0.1", settings.port,
                                                                             role)


def test_tls_and_a_password_are_required_and_the_certificate_verifies(private: Any, tmp_path: Path) -> None:
    settings, run = private
    writer = run["docs"]["ops_writer"]
    with _as(settings, writer) as conn:  # sslmode=verify-full against the local CA, hostname 127.0.0.1
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    base = {"host": "127.0.0.1", "port": settings.port, "dbname": "medistream", "connect_timeout": 5}
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry"):
        psycopg.connect(**base, user="ops_writer", password=writer["password"], sslmode="disable")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**base, user="ops_writer", password="not-the-password", sslmode="require")
    postgres.write_certificates(tmp_path / "another-ca")  # a CA that did not sign the server's certificate
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed|signature failure"):
        psycopg.connect(**base, user="ops_writer", password=writer["password"], sslmode="verify-full",
                        sslrootcert=str(tmp_path / "another-ca" / "ca.crt"))


def test_migrations_create_the_tables_the_job_writes_and_run_once(private: Any, tmp_path: Path) -> None:
    settings, run = private
    assert run["applied"] == ["0001_current_state.sql", "0002_key_per_feed.sql", "0003_fraud_signals.sql",
                              "0004_device_events.sql"]
    assert postgres.migrate(settings) == []  # applied already: nothing again
    with _as(settings, run["docs"]["ops_reader"]) as conn:
        for table in (*operational_tables().values(), SIGNALS_TABLE):
            found = conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE "
                "a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                (f"ops.{table}",)).fetchall()
            assert found == postgres_columns(table), table
    changed = tmp_path / "migrations"
    shutil.copytree(postgres.MIGRATIONS, changed)
    first = changed / "0001_current_state.sql"
    first.write_text(first.read_text() + "\n-- edited after it was applied\n")
    with pytest.raises(StackError, match="0001_current_state.sql was changed after it was applied"):
        postgres.migrate(settings, changed)


def test_roles_have_least_privilege_and_the_newest_version_wins(private: Any) -> None:
    settings, run = private
    writer, reader = run["docs"]["ops_writer"], run["docs"]["ops_reader"]
    columns = [name for name, _ in postgres_columns("payments")]
    values = {name: None for name in columns} | {"record_id": "r1", "feed": "feed_x", "business_key": "k1",
                                                  "sent_at_ms": 1000, "payment_amount": 10}
    insert = f"INSERT INTO ops.payments ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"  # noqa: S608
    upsert = insert + f" ON CONFLICT (feed, business_key) DO UPDATE SET ({', '.join(columns)}) = " \
                      f"({', '.join('EXCLUDED.' + c for c in columns)})"

    def row() -> tuple[Any, ...]:
        with _as(settings, reader) as conn:
            return tuple(conn.execute("SELECT record_id, sent_at_ms, payment_amount FROM ops.payments "
                                      "WHERE business_key = 'k1'").fetchall())

    with _as(settings, writer) as conn:
        conn.execute(insert, [values[c] for c in columns])
        for statement in (insert, upsert):  # the job's plain insert, and an upsert as another writer would send
            for older in ({"record_id": "r0", "sent_at_ms": 999}, {"payment_amount": 99}, {"record_id": "r0"}):
                conn.execute(statement, [(values | older)[c] for c in columns])
        assert row() == (("r1", 1000, 10),)  # an older version, the same record again: nothing changed
        conn.execute(insert, [(values | {"record_id": "r2", "sent_at_ms": 2000, "payment_amount": 20})[c]
                              for c in columns])
        conn.execute(upsert, [(values | {"record_id": "r3", "sent_at_ms": 3000, "payment_amount": 30})[c]
                              for c in columns])
        assert row() == (("r3", 3000, 30),)
        for forbidden in ("DELETE FROM ops.payments", "CREATE TABLE ops.x (a int)", "TRUNCATE ops.payments",
                          "CREATE TABLE public.x (a int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(forbidden)
    with _as(settings, reader) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(insert, [(values | {"business_key": "k2"})[c] for c in columns])


def test_a_restart_keeps_the_data_and_the_passwords_and_a_second_start_is_a_no_op(private: Any) -> None:
    settings, run = private
    with postgres.connect(settings) as conn:  # the set-up account: schema_migrations is not the services'
        before = conn.execute("SELECT count(*) FROM public.schema_migrations").fetchone()
    with _as(settings, run["docs"]["ops_writer"]) as conn:
        conn.execute("INSERT INTO ops.claims (record_id, feed, business_key, sent_at_ms) VALUES ('r1', 'f', 'k', 1)")
    pid = postgres.status(settings)["pid"]
    postgres.start(settings)  # running: nothing started
    assert postgres.status(settings)["pid"] == pid
    assert postgres.stop(settings) == pid and not psutil.pid_exists(pid)
    postgres.start(settings)
    assert postgres.status(settings)["pid"] not in (None, pid)
    with postgres.connect(settings) as conn:
        assert conn.execute("SELECT count(*) FROM public.schema_migrations").fetchone() == before
        assert conn.execute("SELECT record_id, sent_at_ms FROM ops.claims").fetchall() == [("r1", 1)]
    # Provisioned again (every `stack up` does): the passwords stay, so a running job's next connection works.
    assert postgres.provision(settings, run["secrets"], secret_prefix=run["prefix"]) == []
    for doc in run["docs"].values():
        with _as(settings, doc) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (doc["username"],)
