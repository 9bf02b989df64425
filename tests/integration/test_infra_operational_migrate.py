"""`medistream infra migrate-operational` (the operational store's migrations in AWS, run by the doors stack's one-off
ECS task) against a real PostgreSQL server and Secrets Manager API on this machine: a private server of
infra/local/postgres.py (TLS, verify-full against its CA, as Aurora against the RDS bundle) and a private moto
server, each started for the test and stopped after. The database exists before, as Aurora's default database does.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.aws.rehearsal import local_server
from infra.local import postgres
from infra.local.process import free_loopback_port
from tools.infra import MigrationError, main, migrate_operational

pytestmark = pytest.mark.integration


@pytest.fixture
def aurora_like(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A private server with the `medistream` database and no schema; the three logins' secrets in a private moto."""
    import boto3

    home = tmp_path / "home"
    home.mkdir()
    settings = postgres.PostgresSettings(home, free_loopback_port())
    try:
        postgres.start(settings)
        with postgres.connect(settings, dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {postgres.DATABASE}")
        with local_server(tmp_path / "moto.log") as url:
            secrets = boto3.client("secretsmanager", endpoint_url=url, region_name="us-east-1",
                                   aws_access_key_id="test", aws_secret_access_key="test")
            base = {"host": "127.0.0.1", "port": settings.port, "dbname": postgres.DATABASE}
            docs = {postgres.ADMIN: {**base, "username": postgres.ADMIN,
                                     "password": postgres.admin_password(settings)},
                    **{role: {**base, "username": role, "password": f"{role}-pw-{free_loopback_port()}"}
                       for role in postgres.ROLES}}
            for login, doc in docs.items():
                secrets.create_secret(Name=f"medistream-dev/operational/{login}", SecretString=json.dumps(doc))
            yield {"settings": settings, "secrets": secrets, "docs": docs, "url": url}
    finally:
        postgres.stop(settings)
        shutil.rmtree(settings.folder, ignore_errors=True)


def test_migrations_apply_once_and_the_logins_take_their_secrets_passwords(aurora_like: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    settings, secrets, docs = aurora_like["settings"], aurora_like["secrets"], aurora_like["docs"]
    logins = [f"medistream-dev/operational/{role}" for role in postgres.ROLES]
    admin = f"medistream-dev/operational/{postgres.ADMIN}"
    expected = [name for _v, name, _sql in postgres.migrations()]
    assert migrate_operational(secrets, admin, logins, settings.ca_file) == expected
    assert migrate_operational(secrets, admin, logins, settings.ca_file) == []  # idempotent
    for role in postgres.ROLES:  # each login role now takes the password its secret holds, over verified TLS
        with postgres.connect(settings, user=role, password=docs[role]["password"]) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
    with postgres.connect(settings) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'ops'")}
        assert tables and {r[0] for r in conn.execute("SELECT name FROM public.schema_migrations")} == set(expected)
    # A migration changed after it was applied is refused, naming it; nothing else runs.
    changed = tmp_path / "migrations"
    shutil.copytree(postgres.MIGRATIONS, changed)
    first = sorted(changed.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match=f"migration {first.name} was changed"):
        migrate_operational(secrets, admin, logins, settings.ca_file, changed)


def test_what_the_image_lacks_is_named_and_no_secret_is_printed(aurora_like: dict[str, Any], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    settings, secrets, docs = aurora_like["settings"], aurora_like["secrets"], aurora_like["docs"]
    admin = f"medistream-dev/operational/{postgres.ADMIN}"
    with pytest.raises(MigrationError, match="the services' image must carry migrations/postgres/"):
        migrate_operational(secrets, admin, [], settings.ca_file, tmp_path / "absent")
    with pytest.raises(MigrationError, match=r"no CA bundle at .*\(verify-full\)"):
        migrate_operational(secrets, admin, [], tmp_path / "absent.pem")
    with pytest.raises(MigrationError, match="names the administrator"):
        migrate_operational(secrets, admin, [admin], settings.ca_file)
    # The task's command line: exit 2 with the reason, nothing of any secret on either stream.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", aurora_like["url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    assert main(["migrate-operational", "--admin-secret", admin, "--region", "us-east-1",
                 "--sslrootcert", str(tmp_path / "absent.pem")]) == 2
    assert main(["migrate-operational", "--admin-secret", admin, "--region", "us-east-1", "--login-secret",
                 "medistream-dev/operational/ops_reader", "--sslrootcert", str(settings.ca_file)]) == 0
    out = capsys.readouterr()
    assert "no CA bundle" in out.err and "1 login password(s) set" in out.out
    assert not [doc["password"] for doc in docs.values() if doc["password"] in out.out + out.err]
