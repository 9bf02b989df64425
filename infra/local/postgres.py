"""The operational store's local server: PostgreSQL on 127.0.0.1, TLS only, least-privilege roles, migrations.

`medistream stack up` starts it (Debian's PostgreSQL binaries, /usr/lib/postgresql/<version>/bin) on
`MEDISTREAM_POSTGRES_PORT` (default 15432) with its files in its own folder (`<home>/postgres/`; run as root,
/var/lib/postgresql/medistream/<digest of the home>/, where the `postgres` account can reach them):
- first use: `initdb` (UTF-8, scram-sha-256), a local CA and a server certificate for 127.0.0.1 and localhost
  (`tls/ca.crt` is what clients verify against: `sslmode=verify-full`);
- every start: `listen_addresses = '127.0.0.1'`, `ssl = on`, the unix socket inside its own folder, and a
  pg_hba.conf of one line, `hostssl all all 127.0.0.1/32 scram-sha-256`: no connection without TLS and a
  password, none from elsewhere;
- then (`provision`): the database, the migrations in migrations/postgres/ (each applied once, in order, in a
  transaction; an applied file that changed is refused), and new passwords for `ops_writer` (the ingest job)
  and `ops_reader` (services), stored in the local Secrets Manager as `medistream/operational/<role>` in
  RDS's JSON form (moto keeps secrets in memory: each `up` writes them again).
PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user Debian's package creates
(`setpriv`, which execs, so the PID file names the postmaster). The bootstrap superuser's password is in a
file only its owner reads, and is used for set-up only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from infra.local import process
from infra.local.settings import LOOPBACK

ENV_PORT = "MEDISTREAM_POSTGRES_PORT"
DEFAULT_PORT = 15432
DATABASE = "medistream"
ADMIN = "medistream_admin"
ROLES = ("ops_writer", "ops_reader")
SECRET_PREFIX = "medistream/operational/"
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations" / "postgres"
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class PostgresSettings:
    """Where the local server keeps its data and listens."""

    home: Path
    port: int = DEFAULT_PORT

    @classmethod
    def from_env(cls, home: Path) -> PostgresSettings:
        return cls(home, int(os.environ.get(ENV_PORT, DEFAULT_PORT)))

    @property
    def folder(self) -> Path:
        """The server's own files (data, TLS key, set-up password, socket). Run as root, the server runs as
        `postgres`, which may not be able to walk down to the home (a home under /root, a test's 0700 temporary
        folder): its files then live in Debian's folder for clusters, one per home."""
        if _server_user() is None:
            return self.home / "postgres"
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:16]
        return Path("/var/lib/postgresql/medistream") / digest

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def tls(self) -> Path:
        return self.folder / "tls"

    @property
    def ca_file(self) -> Path:
        """The CA clients verify the server with (a copy in the home: `operational.sslrootcert`'s default)."""
        return self.home / "postgres" / "tls" / "ca.crt"

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / "postgres.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "postgres.log"

    def endpoint(self) -> str:
        return f"postgresql://{LOOPBACK}:{self.port}/{DATABASE}"


def binaries() -> Path:
    """The newest PostgreSQL's bin folder (ToolMissing when none is installed: `./medistream setup` installs it)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if not found:
        raise process.ToolMissing("PostgreSQL is not installed (/usr/lib/postgresql/*/bin); run ./medistream setup")
    return found[-1].parent


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root (PostgreSQL refuses root); None: ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise process.ToolMissing("running as root, and no `postgres` user to run PostgreSQL as") from None


def _as_server(argv: list[str]) -> list[str]:
    user = _server_user()
    if user is None:
        return argv
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *argv]


def _own(path: Path) -> None:
    """Give a path to the server's account (root only; otherwise it is ours already)."""
    user = _server_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def admin_password(settings: PostgresSettings) -> str:
    return (settings.folder / "admin.password").read_text().strip()


def _write_private(path: Path, text: str | bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(text.encode() if isinstance(text, str) else text)


def write_certificates(folder: Path) -> None:
    """A local CA (ca.crt) and the server's certificate and key for 127.0.0.1 and localhost, signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "medistream local PostgreSQL CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=825))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                          x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "ca.crt").write_bytes(ca.public_bytes(pem))
    (folder / "server.crt").write_bytes(server.public_bytes(pem))
    _write_private(folder / "server.key", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    for name in ("server.crt", "server.key"):
        _own(folder / name)


def init(settings: PostgresSettings) -> None:
    """Create the cluster on first use (a no-op when it exists)."""
    if (settings.data / "PG_VERSION").exists():
        return
    bin_dir = binaries()
    settings.folder.mkdir(parents=True, exist_ok=True)
    if settings.folder.parent.name == "medistream":
        _own(settings.folder.parent)
    write_certificates(settings.tls)
    password = settings.folder / "admin.password"
    _write_private(password, secrets.token_urlsafe(24))
    settings.data.mkdir(mode=0o700, exist_ok=True)
    for path in (settings.folder, settings.data, password, settings.tls):
        _own(path)
    done = subprocess.run(
        _as_server([str(bin_dir / "initdb"), "-D", str(settings.data), "-U", ADMIN, f"--pwfile={password}",
                    "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"]),
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(settings.data, ignore_errors=True)
        raise process.StackError(f"initdb failed: {done.stderr.strip()[-500:]}")


def configure(settings: PostgresSettings) -> None:
    """Listen on 127.0.0.1 only, TLS on, one pg_hba line: TLS and a password, from 127.0.0.1 (every start); the
    CA's certificate copied where clients read it."""
    settings.ca_file.parent.mkdir(parents=True, exist_ok=True)
    if not settings.ca_file.exists() or settings.ca_file.read_bytes() != (settings.tls / "ca.crt").read_bytes():
        shutil.copyfile(settings.tls / "ca.crt", settings.ca_file)
    socket_dir = settings.folder / "socket"
    socket_dir.mkdir(exist_ok=True)
    _own(socket_dir)
    conf = settings.data / "postgresql.conf"
    include = "include_if_exists = 'medistream.conf'"
    if include not in conf.read_text():
        with conf.open("a") as out:
            out.write(f"\n{include}\n")
    (settings.data / "medistream.conf").write_text(server_conf(settings))
    (settings.data / "pg_hba.conf").write_text(hba_conf())
    for name in ("medistream.conf", "pg_hba.conf"):
        _own(settings.data / name)


def server_conf(settings: PostgresSettings) -> str:
    """The settings medistream.conf (included by postgresql.conf) holds: loopback, TLS, no JIT, no statement log
    (an ALTER ROLE ... PASSWORD is never written to the log)."""
    return "\n".join([
        f"listen_addresses = '{LOOPBACK}'", f"port = {settings.port}",
        f"unix_socket_directories = '{settings.folder / 'socket'}'",
        "ssl = on", f"ssl_cert_file = '{settings.tls / 'server.crt'}'",
        f"ssl_key_file = '{settings.tls / 'server.key'}'",
        "ssl_min_protocol_version = 'TLSv1.2'", "password_encryption = 'scram-sha-256'", "jit = off",
        "max_connections = 200", "log_connections = off", "log_statement = 'none'", ""])


def hba_conf() -> str:
    """pg_hba.conf: TLS and a SCRAM password, from 127.0.0.1; nothing else (no trust, no plain host, no socket)."""
    return f"hostssl all all {LOOPBACK}/32 scram-sha-256\n"


def start(settings: PostgresSettings, timeout_s: float = 60.0) -> None:
    """Initialize if needed, configure, start (idempotent) and wait until it takes TLS connections."""
    init(settings)
    configure(settings)
    proc = process.owned_process(settings.pid_file)
    if proc is not None:
        _wait_answering(settings, proc, timeout_s)
        return
    process.ensure_port_free(settings.port, "postgres", ENV_PORT)
    proc = process.launch(_as_server([str(binaries() / "postgres"), "-D", str(settings.data)]),
                          log_file=settings.log_file, pid_file=settings.pid_file, marker=str(settings.data),
                          cwd=settings.folder)
    try:
        _wait_answering(settings, proc, timeout_s)
    except BaseException:  # a server that never answered is not left running behind the error
        _end(proc)
        settings.pid_file.unlink(missing_ok=True)
        raise


def _wait_answering(settings: PostgresSettings, proc: psutil.Process, timeout_s: float) -> None:
    """Poll until the server takes a TLS login; fail fast, with the log's tail, if the process exits.

    Liveness is the launched process itself (psutil checks its create time), not the PID file's command-line
    marker: a start once failed as "exited" with the server up and ready (a transient mismatch while it started)."""
    started = time.monotonic()
    while not _answers(settings):
        try:
            alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        if not alive:
            raise process.HealthTimeout(f"postgres exited while starting; last lines of {settings.log_file}:\n"
                                        f"{process.tail(settings.log_file)}")
        if time.monotonic() - started > timeout_s:
            raise process.HealthTimeout(f"postgres did not answer within {timeout_s:.0f} s; last lines of "
                                        f"{settings.log_file}:\n{process.tail(settings.log_file)}")
        time.sleep(0.25)


def _end(proc: psutil.Process, timeout_s: float = 10.0) -> None:
    """Fast shutdown of a server we launched, SIGKILL if it does not go."""
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=timeout_s)
    except psutil.TimeoutExpired:
        proc.kill()
    except psutil.NoSuchProcess:
        pass


def stop(settings: PostgresSettings, timeout_s: float = 30.0) -> int | None:
    """Fast shutdown (SIGINT: open sessions are ended, not waited for), then SIGTERM/SIGKILL if it hangs."""
    proc = process.owned_process(settings.pid_file)
    if proc is None:
        settings.pid_file.unlink(missing_ok=True)
        return None
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=timeout_s)
    except Exception:  # psutil's timeout or a vanished process: the generic stop finishes it
        return process.stop(settings.pid_file, term_timeout_s=10.0)
    settings.pid_file.unlink(missing_ok=True)
    return proc.pid


def connect(settings: PostgresSettings, user: str = ADMIN, password: str | None = None, dbname: str = DATABASE,
            **kwargs: Any) -> Any:
    """A TLS connection (verify-full against the local CA) to the server."""
    import psycopg

    return psycopg.connect(host=LOOPBACK, port=settings.port, dbname=dbname, user=user,
                           password=password if password is not None else admin_password(settings),
                           sslmode="verify-full", sslrootcert=str(settings.ca_file), connect_timeout=5,
                           **kwargs)


def _answers(settings: PostgresSettings) -> bool:
    try:
        with connect(settings, dbname="postgres") as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:  # starting, or recovering: asked again
        return False


def migrations(folder: Path = MIGRATIONS) -> list[tuple[str, str, str]]:
    """(version, file name, SQL) of each migration, in version order."""
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION.match(path.name)
        if match is None:
            raise process.StackError(f"migration {path.name}: not named NNNN_name.sql")
        found.append((match.group(1), path.name, path.read_text()))
    return found


def migrate(settings: PostgresSettings, folder: Path = MIGRATIONS) -> list[str]:
    """Apply each migration not applied yet, in order, each in one transaction; the names applied now.

    `public.schema_migrations` records each applied version and its SHA-256: an applied file that changed is
    refused (a new migration is a new file)."""
    applied_now = []
    with connect(settings) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.schema_migrations (version text PRIMARY KEY, name text NOT "
                     "NULL, sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        conn.commit()
        done = {v: (n, h) for v, n, h in conn.execute("SELECT version, name, sha256 FROM public.schema_migrations")}
        for version, name, sql in migrations(folder):
            digest = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                if done[version][1] != digest:
                    raise process.StackError(f"migration {name} was changed after it was applied: write a new one")
                continue
            with conn.transaction():
                conn.execute(sql)
                conn.execute("INSERT INTO public.schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                             (version, name, digest))
            applied_now.append(name)
    return applied_now


def provision(settings: PostgresSettings, secrets_client: Any, secret_prefix: str = SECRET_PREFIX) -> list[str]:
    """The database, the migrations, and each login role's password as its Secrets Manager secret holds it (a new
    one, stored there, when there is none); the migrations applied now.

    Idempotent: a restart of the server, or `stack up` again, keeps every password, so a running job's next
    connection works. A secret lost with moto's memory gets a new password, which the role takes at once."""
    from psycopg import sql

    from connectors.secrets import put_secret

    with connect(settings, dbname="postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    applied = migrate(settings)
    with connect(settings, autocommit=True) as conn:
        for role in ROLES:
            secret_id = secret_prefix + role
            doc = _secret(secrets_client, secret_id)
            if doc is None or doc.get("port") != settings.port or not isinstance(doc.get("password"), str):
                doc = {"engine": "postgres", "host": LOOPBACK, "port": settings.port, "dbname": DATABASE,
                       "username": role, "password": secrets.token_urlsafe(24)}
                put_secret(secrets_client, secret_id, doc)
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role),
                                                                     sql.Literal(doc["password"])))
    return applied


def _secret(secrets_client: Any, secret_id: str) -> dict[str, Any] | None:
    """A JSON secret's content, or None when there is none (or it is not a JSON object)."""
    try:
        doc = json.loads(secrets_client.get_secret_value(SecretId=secret_id)["SecretString"])
    except Exception:  # ResourceNotFoundException by its service-specific class, or not JSON
        return None
    return doc if isinstance(doc, dict) else None


def status(settings: PostgresSettings) -> dict[str, Any]:
    """PID and health, without starting anything."""
    proc = process.owned_process(settings.pid_file)
    return {"pid": proc.pid if proc else None, "healthy": proc is not None and _answers(settings),
            "endpoint": settings.endpoint()}
