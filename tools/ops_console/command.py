"""`medistream ops`: serve the ops console on loopback, or hand out and revoke its tokens.

    medistream ops serve [--port N] [--prometheus URL]
    medistream ops token add --user NAME --role viewer|operator   # prints the token once; its digest is stored
    medistream ops token revoke --user NAME

Configuration: the optional property group `ops_console` (`port`, default 18096; `tokens.secret`, default
medistream/ops-console/tokens; `tokens.refresh.s`, default 30); Secrets Manager and DynamoDB from the
`phi` and `audit` groups, Kafka from `kafka`, the cluster from MEDISTREAM_CLUSTER_* as `medistream jobs`
reads it, Prometheus from MEDISTREAM_PROMETHEUS_PORT as `medistream stack up` starts it.
"""

from __future__ import annotations

import argparse
import os
import subprocess  # nosec B404 # - starts `medistream ops serve` as a child, fixed argv
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from connectors.properties import default_properties_path, load_phi_config, medistream_home, read_property_groups
from tools.ops_console.auth import DEFAULT_SECRET

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 18096


def _settings(groups: Mapping[str, Mapping[str, str]]) -> tuple[int, str, float]:
    group = groups.get("ops_console", {})
    return (int(group.get("port", DEFAULT_PORT)), group.get("tokens.secret") or DEFAULT_SECRET,
            float(group.get("tokens.refresh.s", 30)))


def build(groups: Mapping[str, Mapping[str, str]], prometheus_url: str | None = None) -> tuple[Any, str]:
    """(the app over the configured back ends, the Prometheus URL it reads)."""
    from connectors.audit import load_audit_settings, open_audit_log
    from connectors.kms import aws_client
    from infra.local.prometheus import PrometheusSettings
    from tools.dlq import replay
    from tools.dlq_units import load_config
    from tools.job_control import backend_for
    from tools.ops_console.app import Sources, build_app
    from tools.ops_console.auth import Tokens
    from tools.ops_console.panels import Prometheus

    _, secret_id, refresh_s = _settings(groups)
    tokens = Tokens.from_secret(aws_client(load_phi_config(groups), "secretsmanager"), secret_id, refresh_s)
    url = prometheus_url or PrometheusSettings.from_env(medistream_home()).url()
    audit = load_audit_settings(groups)
    dlq = load_config(groups)
    sources = Sources(tokens=tokens, backend=lambda: backend_for("local"), dlq_config=lambda: dlq,
                      prometheus=Prometheus(url), audit=lambda: open_audit_log(audit), replay=replay,
                      lineage_url=(groups.get("lineage") or {}).get("url") or None)
    return build_app(sources), url


def serve(port: int | None, prometheus_url: str | None) -> int:
    """Serve until SIGINT/SIGTERM on 127.0.0.1."""
    import uvicorn

    from tools.ops_console.auth import TokensError

    groups = read_property_groups(default_properties_path())
    try:
        app, url = build(groups, prometheus_url)
    except TokensError as err:
        print(f"medistream ops: {err}; create a token first: medistream ops token add --user NAME --role viewer",
              file=sys.stderr)
        return 2
    port = port or _settings(groups)[0]
    print(f"ops console on http://{LOOPBACK}:{port}/ (Prometheus {url}; sign in with a token from "
          "`medistream ops token add`)", flush=True)
    uvicorn.run(app, host=LOOPBACK, port=port, log_level="warning", access_log=False)
    return 0


def start_background(properties: Path, log_file: Path, prometheus_url: str | None = None, port: int | None = None,
                     timeout_s: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """`medistream ops serve` as a child process over `properties`; (process, URL) once it answers.

    The port is `port`, else the configured one if it is free, else any free loopback port.
    """
    from infra.local.process import free_loopback_port, port_is_free

    port = port or _settings(read_property_groups(properties))[0]
    port = port if port_is_free(port) else free_loopback_port()
    argv = [sys.executable, "-m", "tools.ops_console.command", "serve", "--port", str(port)]
    argv += ["--prometheus", prometheus_url] if prometheus_url else []
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        # B603 - our own interpreter and module, fixed argv, no shell
        child = subprocess.Popen(argv, env={**os.environ, "MEDISTREAM_PROPERTIES": str(properties)},  # noqa: S603
                                 stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + timeout_s
    while not _answers(url + "/healthz"):
        if child.poll() is not None or time.monotonic() > deadline:
            stop_background(child)
            raise RuntimeError(f"the ops console did not start (see {log_file})")
        time.sleep(0.3)
    return child, url


def stop_background(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    child.terminate()
    try:
        child.wait(20)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 -- our loopback URL
            return True
    except OSError:
        return False


def demo_token(groups: Mapping[str, Mapping[str, str]], folder: Path) -> Path:
    """A fresh viewer token for user `demo-viewer` (earlier ones revoked), in a file only its owner reads."""
    from connectors.kms import aws_client
    from tools.ops_console.auth import add_token, revoke_user

    secrets, secret_id = aws_client(load_phi_config(groups), "secretsmanager"), _settings(groups)[1]
    revoke_user(secrets, secret_id, "demo-viewer")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo-viewer.token"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(add_token(secrets, secret_id, "demo-viewer", "viewer") + "\n")
    return path


def parser() -> argparse.ArgumentParser:
    """The `medistream ops` arguments."""
    root = argparse.ArgumentParser(prog="medistream ops", description=__doc__.split("\n", 1)[0])
    sub = root.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="serve the console on 127.0.0.1 until Ctrl-C")
    run.add_argument("--port", type=int, help=f"default: ops_console.port or {DEFAULT_PORT}")
    run.add_argument("--prometheus", help="Prometheus URL (default: the one `medistream stack up` starts)")
    token = sub.add_parser("token", help="add or revoke a console token (Secrets Manager holds digests only)")
    tsub = token.add_subparsers(dest="token_command", required=True)
    add = tsub.add_parser("add")
    add.add_argument("--user", required=True)
    add.add_argument("--role", required=True, choices=["viewer", "operator"])
    revoke = tsub.add_parser("revoke")
    revoke.add_argument("--user", required=True)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `medistream ops` command."""
    args = parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.port, args.prometheus)
    from connectors.kms import aws_client
    from tools.ops_console.auth import TokensError, add_token, revoke_user

    groups = read_property_groups(default_properties_path())
    secrets, secret_id = aws_client(load_phi_config(groups), "secretsmanager"), _settings(groups)[1]
    try:
        if args.token_command == "add":  # noqa: S105 -- a sub-command's name
            print(add_token(secrets, secret_id, args.user, args.role))
        else:
            print(f"revoked {revoke_user(secrets, secret_id, args.user)} token(s) of {args.user}")
    except TokensError as err:
        print(f"medistream ops: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
