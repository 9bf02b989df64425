"""`medistream infra synth|check`: the CDK app of infra/aws/ for dev and prod, and its checks.

    medistream infra synth [--environment dev|prod|all] [--out DIR] [--cli] [--replica-region R]
    medistream infra check [--environment dev|prod|all] [--cli] [--replica-region R]
    medistream infra rehearse [--environment dev|prod]
    medistream infra migrate-operational --admin-secret S [--login-secret S ...] --region R

`synth` writes the CloudFormation templates (cdk-nag's AwsSolutions, HIPAA Security and NIST 800-53
rev 5 packs run during synthesis: any unacknowledged finding fails it, exit 1, with each finding
printed). `--cli` synthesizes through the CDK toolkit from npm (`cdk synth`, cdk.json) instead of in
process; both run the same app. `check` synthesizes, then runs cfn-lint and checkov (offline; each skip
justified in the template metadata) over every template. `rehearse` deploys the long-lived stacks (identity,
keys, credentials, storage) to a private local AWS API server on 127.0.0.1 and probes them through the
service APIs (infra/aws/rehearsal.py). `migrate-operational` applies migrations/postgres/ to the operational store
as its administrator and sets the login roles' passwords from their secrets (the doors stack's one-off ECS task).
The CDK's JavaScript runs under the Node 22 that ./medistream installs ($MEDISTREAM_HOME/infra-node).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404 # - runs the pinned CDK toolkit, cfn-lint and checkov, fixed argv
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.properties import REPO_ROOT, medistream_home

if TYPE_CHECKING:  # the CDK app is not in the services' image, where `migrate-operational` runs
    from infra.aws.config import Names

INFRA_DIR = REPO_ROOT / "infra" / "aws"
# What `migrate-operational` reads in the services' image (/app is the repository's root there).
MIGRATIONS_DIR = REPO_ROOT / "migrations" / "postgres"
RDS_CA_BUNDLE = INFRA_DIR / "certs" / "rds-global-bundle.pem"


def node_bin() -> Path:
    """The folder of the Node 22 and `cdk` that ./medistream installs."""
    return medistream_home() / "infra-node" / "node_modules" / ".bin"


def use_node() -> None:
    """Make jsii start Node 22 (the machine's Node may be end-of-life) before aws_cdk is imported."""
    node = node_bin() / "node"
    if node.exists():
        os.environ.setdefault("JSII_NODE", str(node))
    os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")


def properties_for(names: Names):  # type: ignore[no-untyped-def]
    """job, deploy-time values -> the application's property groups: production's, with this environment's names."""
    from tools.package import application_properties, job_run_options

    def properties(job: str, values: Mapping[str, str]) -> list[dict[str, object]]:
        groups = application_properties("production", job, {"run_options": job_run_options()}, values=values)
        own = names.runtime_properties()
        for group in groups:
            overrides = own.get(str(group["PropertyGroupId"]), {})
            group["PropertyMap"] = {**group["PropertyMap"], **overrides}  # type: ignore[dict-item]
        return groups

    return properties


def service_properties_for(names: Names):  # type: ignore[no-untyped-def]
    """service, deploy-time values -> an ECS service's property groups: production's, plus the service's own group.

    conf/environments/production.json drops the services' groups (the Managed Flink applications do not read
    them), so each service's own group is conf/application_properties.json's with infra/aws/service_overlay.json
    over it (`config.service_groups`: the Snowflake loader in snowpipe mode, the pulled feeds), its deploy-time
    tokens filled from `values` (a token left over fails the synth, naming the key), this environment's names
    (tables, secrets) over that.
    """
    from infra.aws.config import SERVICES, fill, service_groups
    from tools.package import RUN_OPTIONS_GROUP, application_properties

    def properties(service: str, values: Mapping[str, str]) -> list[dict[str, object]]:
        groups = {str(g["PropertyGroupId"]): dict(g["PropertyMap"])  # type: ignore[call-overload]
                  for g in application_properties("production", service, {"run_options": {service: {}}},
                                                  values=values)}
        groups.pop(RUN_OPTIONS_GROUP, None)
        own_group = SERVICES[service][1]
        groups[own_group] = {k: fill(v, values, f"{own_group}.{k}")
                             for k, v in service_groups()[own_group].items()}
        for group, keys in names.runtime_properties().items():
            if group in groups:
                groups[group].update(keys)
        groups[own_group].update({k: names.secret(v) for k, v in groups[own_group].items()
                                  if k.endswith("secret") and v.startswith("medistream/")})
        return [{"PropertyGroupId": name, "PropertyMap": keys} for name, keys in sorted(groups.items())]

    return properties


def build(env: str, outdir: str | None = None, nag: bool = True,  # type: ignore[no-untyped-def]
          replica_region: str | None = None):
    """The app of one environment (infra.aws.app.build with the applications' and services' properties; the
    archive's replica in `replica_region`, config.DEFAULT_REPLICA_REGION unless given)."""
    use_node()
    from aws_cdk import Aws

    from infra.aws.app import build as build_app
    from infra.aws.config import DEFAULT_REPLICA_REGION, names

    n = names(env, Aws.ACCOUNT_ID)
    return build_app(env, properties_for(n), service_properties_for(n), outdir=outdir, nag=nag,
                     replica_region=replica_region or DEFAULT_REPLICA_REGION)


def findings(report: Path) -> list[str]:
    """cdk's validation-report.json as one line per finding: severity rule path."""
    if not report.exists():
        return []
    doc = json.loads(report.read_text())
    return sorted(f"{v['severity']} {v['ruleName']} {c['constructPath']}"
                  for p in doc.get("pluginReports", []) for v in p.get("violations", [])
                  for c in v["violatingConstructs"])


def synth(env: str, out: Path, replica_region: str | None = None) -> tuple[bool, list[str]]:
    """Synthesize in process into `out`: (passed, findings)."""
    app, _stacks = build(env, outdir=str(out), replica_region=replica_region)
    try:
        app.synth()
    except RuntimeError as err:
        if "ValidationFailed" not in str(err):
            raise
        return False, findings(out / "validation-report.json")
    return True, []


def synth_cli(env: str, out: Path, replica_region: str | None = None) -> int:
    """`cdk synth` through the CDK toolkit with cdk.json's app command; its exit code."""
    use_node()
    cdk = node_bin() / "cdk"
    # No notices or telemetry: both would call out of the machine on every synth.
    env_vars = {**os.environ, "PATH": f"{node_bin()}:{os.environ.get('PATH', '')}", "CDK_DISABLE_CLI_TELEMETRY": "true"}
    replica = ["-c", f"replica_region={replica_region}"] if replica_region else []
    # B603 - the pinned tools from our own install folders, fixed argv, no shell
    return subprocess.run([str(cdk), "synth", "--quiet", "--no-notices", "-c", f"environment={env}",  # noqa: S603
                           *replica, "--output", str(out)],
                          cwd=INFRA_DIR, env=env_vars, check=False).returncode


def cfn_lint(templates: list[Path]) -> int:
    """cfn-lint over the templates; its exit code (0: clean)."""
    cfn_lint_bin = Path(sys.executable).with_name("cfn-lint")
    # B603 - the pinned tools from our own install folders, fixed argv, no shell
    return subprocess.run([str(cfn_lint_bin), *map(str, templates)], check=False).returncode  # noqa: S603


def checkov_bin() -> Path:
    """The checkov that ./medistream installs in a virtualenv of its own."""
    return medistream_home() / "checkov-venv" / "bin" / "checkov"


def checkov(out: Path) -> int:
    """checkov over the synthesized templates, offline (no platform download); its exit code (0: no failed check)."""
    # B603 - the pinned tools from our own install folders, fixed argv, no shell
    return subprocess.run([str(checkov_bin()), "-d", str(out), "--framework", "cloudformation", "--quiet",  # noqa: S603
                           "--compact", "-o", "cli", "--skip-download"], check=False).returncode


def rehearse_main(out: Path, env: str) -> int:
    """Synthesize `env`, deploy its long-lived stacks to a private local AWS API server, print every probe.

    Exit 1 if a stack did not complete or a property the server applies does not hold; what the server does
    not apply is listed as such (it cannot pass or fail here).
    """
    from infra.aws.rehearsal import rehearse

    started = time.monotonic()
    ok, lines = synth(env, out)
    if not ok:
        print(f"{env}: synth FAILED: " + "; ".join(lines))
        return 1
    status, probes = rehearse(out, env, out / "local-server.log")
    for stack, state in status.items():
        print(f"{env}: stack {stack}: {state} (as the local server reports it)")
    for p in probes:
        print(f"  {p.verdict:11s}  {p.name}  [{p.detail}]")
    held = sum(p.verdict == "holds" for p in probes)
    skipped = sum(p.verdict == "not applied" for p in probes)
    failed = [p for p in probes if p.verdict == "fails"]
    print(f"{env}: rehearsal in {time.monotonic() - started:.0f} s: {held} hold, {len(failed)} fail, {skipped} not "
          f"applied by the local server")
    return 1 if failed or any(state != "CREATE_COMPLETE" for state in status.values()) else 0


def app_main() -> int:
    """The CDK CLI's app command (cdk.json): the environment from the context."""
    use_node()
    from aws_cdk import App

    context = json.loads(os.environ.get("CDK_CONTEXT_JSON") or "{}")
    outdir = os.environ.get("CDK_OUTDIR")
    app, _stacks = build(context.get("environment") or "dev", outdir=outdir,
                         replica_region=context.get("replica_region"))
    assert isinstance(app, App)  # noqa: S101 - the type build returns
    app.synth()
    return 0


class MigrationError(RuntimeError):
    """The operational store cannot be migrated as asked; the message names what is missing, never a secret value."""


def migrate_operational(secrets_client: Any, admin_secret: str, login_secrets: Sequence[str], sslrootcert: Path,
                        folder: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the operational store's migrations as its administrator, then set each login's password from its secret;
    the migrations applied now.

    What `infra/local/postgres.provision` does for the local server, against the server the secrets name (Aurora in
    AWS: the one-off ECS task of the doors stack), over TLS verified against `sslrootcert` (verify-full). The
    migrations run as `infra.local.postgres.migrate` runs them: each not applied yet, in order, in one transaction
    with its row in public.schema_migrations; an applied file whose SHA-256 changed is refused. Idempotent: a second
    run applies nothing and sets the same passwords.
    """
    import hashlib

    import psycopg
    from psycopg import sql

    from connectors.operational import connection
    from infra.local.postgres import migrations

    if not folder.is_dir() or not list(folder.glob("*.sql")):
        raise MigrationError(f"no migrations in {folder}: the services' image must carry migrations/postgres/ "
                             "(decision 0041)")
    if not sslrootcert.is_file():
        raise MigrationError(f"no CA bundle at {sslrootcert}: the store's certificate is always verified "
                             "(verify-full); the services' image must carry infra/aws/certs/rds-global-bundle.pem "
                             "(decision 0041)")
    admin = connection(secrets_client, admin_secret)
    logins = [connection(secrets_client, secret) for secret in login_secrets]
    if any(doc["username"] == admin["username"] for doc in logins):
        raise MigrationError("a login secret names the administrator: only the migrations' login roles are set here")

    def connect(autocommit: bool = False) -> Any:
        return psycopg.connect(host=admin["host"], port=int(admin["port"]), dbname=admin["dbname"],
                               user=admin["username"], password=admin["password"], sslmode="verify-full",
                               sslrootcert=str(sslrootcert), connect_timeout=10, autocommit=autocommit)

    applied_now = []
    with connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.schema_migrations (version text PRIMARY KEY, name text NOT "
                     "NULL, sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        conn.commit()
        done = {v: h for v, _n, h in conn.execute("SELECT version, name, sha256 FROM public.schema_migrations")}
        for version, name, text in migrations(folder):
            digest = hashlib.sha256(text.encode()).hexdigest()
            if version in done:
                if done[version] != digest:
                    raise MigrationError(f"migration {name} was changed after it was applied: write a new one")
                continue
            with conn.transaction():
                conn.execute(text)
                conn.execute("INSERT INTO public.schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                             (version, name, digest))
            applied_now.append(name)
    with connect(autocommit=True) as conn:
        for doc in logins:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(doc["username"]),
                                                                     sql.Literal(doc["password"])))
    return applied_now


def migrate_main(argv: list[str]) -> int:
    """`medistream infra migrate-operational`: the one-off task's command (runs in the services' image)."""
    import boto3

    parser = argparse.ArgumentParser(prog="medistream infra migrate-operational",
                                     description=migrate_operational.__doc__.split("\n\n")[0])  # type: ignore[union-attr]
    parser.add_argument("--admin-secret", required=True, help="the administrator's secret (RDS JSON form)")
    parser.add_argument("--login-secret", action="append", default=[], help="a login's secret whose password to set")
    parser.add_argument("--region", required=True)
    parser.add_argument("--sslrootcert", type=Path, default=RDS_CA_BUNDLE)
    parser.add_argument("--migrations", type=Path, default=MIGRATIONS_DIR)
    args = parser.parse_args(argv)
    try:
        applied = migrate_operational(boto3.client("secretsmanager", region_name=args.region), args.admin_secret,
                                      args.login_secret, args.sslrootcert, args.migrations)
    except MigrationError as err:
        print(f"migrate-operational: {err}", file=sys.stderr)
        return 2
    print(f"migrate-operational: applied {', '.join(applied) or 'nothing (up to date)'}; "
          f"{len(args.login_secret)} login password(s) set from their secrets")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse and run `medistream infra`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["app"]:
        return app_main()
    if argv[:1] == ["migrate-operational"]:
        return migrate_main(argv[1:])
    from infra.aws.config import ENVIRONMENTS
    parser = argparse.ArgumentParser(prog="medistream infra", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["synth", "check", "rehearse"])
    parser.add_argument("--environment", choices=[*ENVIRONMENTS, "all"], default="all")
    parser.add_argument("--out", type=Path, default=medistream_home() / "cdk.out")
    parser.add_argument("--cli", action="store_true", help="synthesize through the CDK toolkit (cdk synth)")
    parser.add_argument("--replica-region", help="the archive's replica region (default: "
                                                 "infra.aws.config.DEFAULT_REPLICA_REGION)")
    args = parser.parse_args(argv)
    envs = list(ENVIRONMENTS) if args.environment == "all" else [args.environment]
    if args.action == "rehearse":
        return rehearse_main(args.out / "rehearsal", "dev" if args.environment == "all" else args.environment)
    status = 0
    for env in envs:
        out = args.out / env
        started = time.monotonic()
        if args.cli:
            ok = synth_cli(env, out, args.replica_region) == 0
            lines = findings(out / "validation-report.json") if not ok else []
        else:
            ok, lines = synth(env, out, args.replica_region)
        templates = sorted(out.glob("*.template.json"))
        print(f"{env}: synth {'ok' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s, "
              f"{len(templates)} templates, {len(lines)} unacknowledged cdk-nag findings -> {out}")
        for line in lines:
            print(f"  {line}")
        status |= 0 if ok else 1
        if ok and args.action == "check":
            lint = cfn_lint(templates)
            print(f"{env}: cfn-lint {'clean' if lint == 0 else f'exit {lint}'}", flush=True)
            scan = checkov(out)
            print(f"{env}: checkov {'0 failed checks' if scan == 0 else f'exit {scan}'}", flush=True)
            status |= 1 if lint or scan else 0
    return status


if __name__ == "__main__":
    sys.exit(main())
