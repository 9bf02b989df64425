"""Unit tests of the operational store's local server's pure parts (infra/local/postgres.py): settings, the server's
configuration text, the migration files, the certificates. No server is started (tests/integration/test_postgres.py)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from infra.local import postgres
from infra.local.process import StackError


def test_port_comes_from_its_variable_with_a_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(postgres.ENV_PORT, raising=False)
    assert postgres.PostgresSettings.from_env(tmp_path).port == 15432
    monkeypatch.setenv(postgres.ENV_PORT, "25432")
    settings = postgres.PostgresSettings.from_env(tmp_path)
    assert settings.endpoint() == "postgresql://127.0.0.1:25432/medistream"
    assert settings.ca_file == tmp_path / "postgres" / "tls" / "ca.crt"  # where the job's sslrootcert points
    assert settings.pid_file == tmp_path / "run" / "postgres.pid"


def test_hba_admits_tls_with_a_scram_password_from_loopback_only() -> None:
    lines = [line.split() for line in postgres.hba_conf().splitlines() if line.strip() and not line.startswith("#")]
    assert lines == [["hostssl", "all", "all", "127.0.0.1/32", "scram-sha-256"]]


def test_server_listens_on_loopback_with_tls_and_no_jit(tmp_path: Path) -> None:
    settings = postgres.PostgresSettings(tmp_path, 25432)
    conf = dict(line.split(" = ", 1) for line in postgres.server_conf(settings).splitlines() if line)
    assert conf["listen_addresses"] == "'127.0.0.1'" and conf["port"] == "25432"
    assert (conf["ssl"], conf["jit"], conf["password_encryption"]) == ("on", "off", "'scram-sha-256'")
    assert conf["log_statement"] == "'none'"  # ALTER ROLE ... PASSWORD never reaches the log
    socket_dir = Path(conf["unix_socket_directories"].strip("'"))
    assert socket_dir.parent == settings.folder  # its own folder, not /var/run/postgresql


def test_the_repos_migrations_are_numbered_in_order_and_a_misnamed_file_is_refused(tmp_path: Path) -> None:
    found = postgres.migrations()
    versions = [version for version, _, _ in found]
    assert versions[:2] == ["0001", "0002"] and versions == sorted(set(versions))
    assert "CREATE SCHEMA ops AUTHORIZATION ops_owner" in found[0][2]
    (tmp_path / "0001_first.sql").write_text("SELECT 1;")
    (tmp_path / "2_second.sql").write_text("SELECT 2;")
    with pytest.raises(StackError, match="2_second.sql: not named NNNN_name.sql"):
        postgres.migrations(tmp_path)


def test_certificates_name_loopback_are_signed_by_the_ca_and_the_key_is_private(tmp_path: Path) -> None:
    postgres.write_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((tmp_path / "server.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    server.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    assert stat.S_IMODE((tmp_path / "server.key").stat().st_mode) == 0o600
    other = tmp_path / "other"
    postgres.write_certificates(other)
    with pytest.raises(InvalidSignature):  # same issuer name, another key
        server.verify_directly_issued_by(x509.load_pem_x509_certificate((other / "ca.crt").read_bytes()))
