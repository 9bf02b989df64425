"""What the stacks are named and hold, read from the files the jobs read, so the infra and the code agree.

Base names come from conf/application_properties.json; an environment's name is the base with
`-<env>` (buckets also `-<account>`: S3 names are global), which is exactly what
conf/environments/production.json spells for prod (tests/unit/test_infra_aws.py holds the two equal).
Key domains are the PHI policies' (`schemas.phi_policy.key_domains`); which domains a partner
delivery role may open is what the partner contracts reveal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connectors.properties import LOCAL_PROPERTIES, PLACEHOLDER, REPO_ROOT

ENVIRONMENTS = ("dev", "prod")
PRODUCTION_OVERLAY = REPO_ROOT / "conf" / "environments" / "production.json"
# The ECS services' production values (production.json drops their groups: the applications do not read them).
SERVICE_OVERLAY = Path(__file__).with_name("service_overlay.json")
# Keys beside the PHI domains, one per store so that a key policy is one store's blast radius:
# raw landed files, the Iceberg lake, the archive, the audit bucket, every log group, the DynamoDB
# ledgers, and our own non-PHI files (the zip, reference data).
# MSK's volumes (streaming: raw.<feed> holds records before PHI protection) and the feed and partner
# credentials in Secrets Manager (credentials).
# The operational store's Aurora cluster (its storage, snapshots and Performance Insights: tokens of PHI, the
# lake's columns) has its own key, so that its blast radius is the store's alone (operational).
SERVICE_KEYS = ("landing", "warehouse", "archive", "audit", "logs", "ledgers", "artifacts", "streaming",
                "credentials", "operational")
# Each bucket and the key it is encrypted with (the access-log bucket: SSE-S3, the only encryption S3
# server access logging delivers to).
BUCKET_KEYS = {"landing": "landing", "warehouse": "warehouse", "archive": "archive", "audit": "audit",
               "reference": "artifacts", "artifacts": "artifacts", "access_logs": None}
NLB_LOG_PREFIX = "nlb"  # the ingest API's load balancer's access logs in the access-log bucket (nlb/AWSLogs/...)
# The Managed Flink applications: job name -> its Python entry module (tools/package.py's run options).
FLINK_JOBS = ("ingest", "partner_delivery")
# The services on ECS Fargate: service -> (the `medistream` command it runs, its property group). The REST
# ingestion API is the push door; the pullers fetch from partners' APIs and SFTP servers; the loader moves
# curated.snowflake into Snowflake.
SERVICES = {"ingest_api": ("ingest-api serve", "ingest_api"), "rest_pull": ("rest-pull run", "rest_pull"),
            "sftp_pull": ("sftp-pull run", "sftp_pull"), "snowflake_load": ("load-snowflake", "snowflake")}
# The role every ECS task starts with (pulls its image, writes its log stream): no access to data.
TASK_EXECUTION = "task_execution"
# The one-off ECS task that migrates the operational store (`medistream infra migrate-operational`, doors stack): reads
# the administrator's and the logins' secrets, reaches the store on 5432.
OPERATIONAL_MIGRATE = "operational_migrate"
SFTP_ROLE_PREFIX = "sftp_"
# What calls endpoints outside AWS (partners' APIs and SFTP servers, Snowflake): these run in the egress subnets,
# out through the egress firewall (infra/aws/egress.py).
PARTNER_FACING = ("partner_delivery", "rest_pull", "sftp_pull", "snowflake_load")
# S3's role for the archive's cross-region replication (infra/aws/replica.py): reads the archive's versions, writes the
# replica bucket in the replica region.
ARCHIVE_REPLICATION_ROLE = "archive_replication"
ARCHIVE_REPLICA = "archive_replica"  # the replica bucket's role in Names.buckets, and its key's name
# The replica region when none is given (`medistream infra synth --replica-region`, `cdk synth -c replica_region=`):
# a deploy into this region itself is refused by the storage stack's rule.
DEFAULT_REPLICA_REGION = "us-west-2"
BACKUP_ROLE = "backup"  # AWS Backup's role for the DynamoDB tables and the Aurora cluster (infra/aws/backup.py)
RDS_MONITORING_ROLE = "rds_monitoring"  # RDS enhanced monitoring's role (the operational store's instances)
# The operational store's login roles (migrations/postgres/0001: ops_owner owns the schema and cannot log in) and
# the cluster's administrator, who runs the migrations as the local server's bootstrap superuser does.
OPERATIONAL_ADMIN = "medistream_admin"
OPERATIONAL_ROLES = ("ops_writer", "ops_reader")
OPERATIONAL_DATABASE = "medistream"


def sftp_role(feed: str) -> str:
    """The role of the Transfer Family user of a landing feed (its sender)."""
    return f"{SFTP_ROLE_PREFIX}{feed}"


def role_principals() -> dict[str, str]:
    """Every role the identity stack makes -> the AWS service that assumes it."""
    return {**{job: "kinesisanalytics.amazonaws.com" for job in FLINK_JOBS},
            **{service: "ecs-tasks.amazonaws.com" for service in (*SERVICES, TASK_EXECUTION, OPERATIONAL_MIGRATE)},
            **{sftp_role(feed): "transfer.amazonaws.com" for feed in feeds_with("landing")},
            BACKUP_ROLE: "backup.amazonaws.com", RDS_MONITORING_ROLE: "monitoring.rds.amazonaws.com",
            ARCHIVE_REPLICATION_ROLE: "s3.amazonaws.com"}


@dataclass(frozen=True)
class Table:
    """A DynamoDB table the code uses: its property (group, key), keys as the code creates them."""

    name: str
    group: str
    hash_key: tuple[str, str]
    range_key: tuple[str, str]


# (group, key) in conf/application_properties.json -> key schema (as each module's ensure_table creates it).
TABLE_KEYS: dict[tuple[str, str], tuple[tuple[str, str], tuple[str, str]]] = {
    ("partners", "ledger.table"): (("partner", "S"), ("idempotency_key", "S")),
    ("audit", "table"): (("chain", "S"), ("seq", "N")),
    ("operations", "locks.table"): (("operation", "S"), ("name", "S")),
    ("sftp_pull", "ledger.table"): (("feed", "S"), ("item", "S")),
    ("ingest_api", "idempotency.table"): (("feed", "S"), ("idempotency_key", "S")),
}
# The operation-lock table has no property in the base file; tools/operation_lease.py's default name.
DEFAULT_NAMES = {("operations", "locks.table"): "medistream-operation-locks"}


def base_groups(path: Path = LOCAL_PROPERTIES) -> dict[str, dict[str, str]]:
    """conf/application_properties.json as {group: {key: value}}."""
    return {g["PropertyGroupId"]: dict(g["PropertyMap"]) for g in json.loads(path.read_text())}


def _bucket(url: str) -> str:
    """s3://name/prefix/ -> name."""
    return url.removeprefix("s3://").split("/", 1)[0]


@dataclass(frozen=True)
class Names:
    """Every name of one environment, as the jobs will look them up."""

    env: str
    account: str
    buckets: dict[str, str]  # role (landing, warehouse, archive, reference, audit, access_logs, artifacts) -> name
    tables: tuple[Table, ...]
    glue_database: str
    alias_prefix: str  # + domain: the CMK alias the jobs' phi group resolves
    token_secret: str
    prefix: str  # "medistream-<env>": roles, log groups, applications, the MSK cluster, the trail

    @property
    def trail(self) -> str:
        """The CloudTrail trail's name (the audit bucket's policy admits this trail only)."""
        return f"{self.prefix}-trail"

    @property
    def msk_cluster(self) -> str:
        """The MSK cluster's name (the jobs' kafka-cluster grants name clusters under it)."""
        return self.prefix

    def alias(self, key: str) -> str:
        """The alias of one key (a PHI domain or a service key)."""
        return f"{self.alias_prefix}{key}"

    def runtime_properties(self, groups: dict[str, dict[str, str]] | None = None) -> dict[str, dict[str, str]]:
        """The property values that name this environment's resources (buckets, tables, catalog, keys, secret).

        Every s3:// path of the base file moves to this environment's bucket of the same role; for prod
        these are the values conf/environments/production.json spells out (tested).
        """
        g = base_groups() if groups is None else groups
        by_base = {_bucket(path): role for role, path in (
            ("landing", g["landing"]["path"]), ("warehouse", g["iceberg"]["warehouse"]),
            ("archive", g["archive"]["path"]), ("reference", g["reference"]["path"]))}
        out: dict[str, dict[str, str]] = {}
        for group, keys in g.items():
            for key, value in keys.items():
                if value.startswith("s3://") and _bucket(value) in by_base:
                    rest = value.removeprefix("s3://").split("/", 1)[1]
                    out.setdefault(group, {})[key] = f"s3://{self.buckets[by_base[_bucket(value)]]}/{rest}"
        for table in self.tables:
            key = next((k for (grp, k) in TABLE_KEYS if grp == table.group), "")
            if table.group in g:
                out.setdefault(table.group, {})[key] = table.name
        out.setdefault("iceberg", {})["namespace"] = self.glue_database
        out.setdefault("phi", {}).update({"kms.alias.prefix": self.alias_prefix, "token.secret": self.token_secret})
        return out

    @property
    def operational_cluster(self) -> str:
        """The operational store's Aurora cluster identifier (its log group is named after it)."""
        return f"{self.prefix}-operational"

    def operational_secret(self, login: str) -> str:
        """The secret of one login of the operational store (medistream-<env>/operational/<login>)."""
        return self.secret(f"medistream/operational/{login}")

    def role(self, role: str) -> str:
        """The IAM role name of a role of config.role_principals()."""
        return f"{self.prefix}-{role.replace('_', '-')}"

    def secret(self, name: str) -> str:
        """A Secrets Manager secret id of this environment (medistream/x -> medistream-<env>/x)."""
        return name.replace("medistream/", f"{self.prefix}/", 1)

    def application(self, job: str) -> str:
        """The Managed Flink application name of a job (as `medistream jobs` names it: tools/job_backend_msf.py)."""
        return f"medistream-{job}-{self.env}"


def names(env: str, account: str, groups: dict[str, dict[str, str]] | None = None) -> Names:
    """The names of environment `env` in `account` (a token in a CDK app), from the base properties."""
    if env not in ENVIRONMENTS:
        raise ValueError(f"environment {env!r}: one of {', '.join(ENVIRONMENTS)}")
    g = base_groups() if groups is None else groups
    buckets = {"landing": _bucket(g["landing"]["path"]), "warehouse": _bucket(g["iceberg"]["warehouse"]),
               "archive": _bucket(g["archive"]["path"]), "reference": _bucket(g["reference"]["path"]),
               "audit": "medistream-audit", "access_logs": "medistream-access-logs",
               "artifacts": "medistream-artifacts"}
    # The archive's replica, in the replica region (its name carries no region: S3 names are global).
    buckets[ARCHIVE_REPLICA] = f"{buckets['archive']}-replica"
    tables = tuple(Table(f"{g.get(group, {}).get(key) or DEFAULT_NAMES[(group, key)]}-{env}", group, *schema)
                   for (group, key), schema in TABLE_KEYS.items())
    base_alias = g["phi"]["kms.alias.prefix"]  # alias/medistream/
    return Names(env=env, account=account,
                 buckets={role: f"{name}-{env}-{account}" for role, name in buckets.items()},
                 tables=tables, glue_database=f"{g['iceberg']['namespace']}_{env}",
                 alias_prefix=f"{base_alias.rstrip('/')}-{env}/",
                 token_secret=g["phi"]["token.secret"].replace("medistream/", f"medistream-{env}/", 1),
                 prefix=f"medistream-{env}")


def production_overlay() -> dict[str, Any]:
    """conf/environments/production.json (what `medistream package --environment production` applies)."""
    return dict(json.loads(PRODUCTION_OVERLAY.read_text()))


def key_domains() -> list[str]:
    """Every PHI data domain (one CMK each), from the shipped PHI policies."""
    from schemas.phi_policy import key_domains as domains

    return domains()


def partner_domains() -> list[str]:
    """The domains the partner delivery job decrypts: those of record types a partner contract reveals fields of."""
    from schemas.partner_contract import PARTNERS_DIR, granted_reveal_fields, load_partner_contract
    from schemas.phi_access import load_access
    from schemas.phi_policy import load_policy

    rules = load_access()
    domains: set[str] = set()
    for path in sorted(PARTNERS_DIR.glob("*.yaml")):
        contract = load_partner_contract(path, granted_reveal_fields(rules, path.stem))
        revealed = [t for t, mapping in contract.payload.items() if mapping.reveal]
        for policy_path in sorted((REPO_ROOT / "schemas" / "phi").glob("*.yaml")):
            policy = load_policy(policy_path.stem)
            domains.update(policy.domains[t] for t in revealed if t in policy.domains)
    return sorted(domains)


def feed_contracts() -> dict[str, Any]:
    """The shipped feed contracts (schemas/feeds), by feed."""
    from schemas.contracts import load_contracts

    return dict(load_contracts())


def feeds_with(door: str) -> list[str]:
    """The feeds whose contract lists `door` among its sources (landing, rest, kafka), sorted."""
    return sorted(f for f, c in feed_contracts().items() if door in c.sources)


@dataclass(frozen=True)
class Topic:
    """A Kafka topic the pipeline uses, as the jobs would create it (they create only missing ones)."""

    name: str
    partitions: int
    configs: tuple[tuple[str, str], ...] = ()


# Partitions per kind of topic: a raw topic's partitions cap the ingest job's source parallelism for that
# feed; partitions can be added later but not removed. The cursor topic is one partition, compacted, as
# the REST puller reads its last cursor per feed.
RAW_PARTITIONS = 6
CURATED_PARTITIONS = 12
DLQ_PARTITIONS = 3


def topics(groups: dict[str, dict[str, str]] | None = None) -> tuple[Topic, ...]:
    """Every topic of the pipeline, from the properties and feed contracts the local run reads.

    raw.<feed> for each feed taking Kafka or REST records; the curated Snowflake topic and one per partner
    a contract routes to (jobs/topics.py's rule); the dead-letter topics; the REST puller's cursors.
    """
    from udfs.routing import partners

    g = base_groups() if groups is None else groups
    contracts = feed_contracts()
    raw = sorted(f for f, c in contracts.items() if {"kafka", "rest"} & set(c.sources))
    partner_ids = partners({f: c.routes for f, c in contracts.items()})
    return (*(Topic(f"raw.{f}", RAW_PARTITIONS) for f in raw),
            Topic(g["curated"]["snowflake.topic"], CURATED_PARTITIONS),
            *(Topic(f"{g['curated']['partner.topic.prefix']}{p}", CURATED_PARTITIONS) for p in partner_ids),
            Topic(g["kafka"]["dlq.topic"], DLQ_PARTITIONS), Topic(g["partners"]["dlq.topic"], DLQ_PARTITIONS),
            Topic(g["rest_pull"]["cursor.topic"], 1, (("cleanup.policy", "compact"),)))


def service_overlay() -> dict[str, Any]:
    """infra/aws/service_overlay.json: the services' production values over the base file."""
    return dict(json.loads(SERVICE_OVERLAY.read_text()))


def service_groups(groups: dict[str, dict[str, str]] | None = None) -> dict[str, dict[str, str]]:
    """The services' own groups (config.SERVICES) in production: base values, the overlay over them (a null removes
    a key), `${NAME}` tokens left for the deploy to fill, values naming this machine (${MEDISTREAM_HOME}) and empty
    ones dropped (the loaders read an absent key as its default)."""
    g = base_groups() if groups is None else groups
    overlay = service_overlay()
    out = {}
    for _command, group in SERVICES.values():
        merged: dict[str, Any] = {**g.get(group, {}), **(overlay.get(group) or {})}
        out[group] = {k: str(v) for k, v in merged.items()
                      if v is not None and v != "" and "${MEDISTREAM_HOME}" not in str(v)}
    return out


def fill(value: str, values: Mapping[str, str], where: str) -> str:
    """`value` with its ${NAME} tokens from `values`; ValueError naming `where` for a token left over."""
    left = [t for t in PLACEHOLDER.findall(value) if t not in values]
    if left:
        raise ValueError(f"{where}: no deploy-time value for ${{{left[0]}}}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], value)


def pulled_feeds(group: str, groups: dict[str, dict[str, str]] | None = None) -> list[str]:
    """The feeds a puller's production group names (`<group>.feeds`)."""
    g = service_groups(groups)
    return [f.strip() for f in g.get(group, {}).get("feeds", "").split(",") if f.strip()]


def _host(url: str) -> str:
    host = urlsplit(url).hostname
    if not host or urlsplit(url).scheme != "https":
        raise ValueError(f"{url!r}: an https URL with a host name is expected")
    return host


def egress_domains(values: Mapping[str, str], groups: dict[str, dict[str, str]] | None = None) -> list[str]:
    """Every host name the pipeline calls outside AWS over HTTPS, from the config the code reads.

    Each partner contract's endpoint and token URLs (partner delivery); each pulled REST feed's URL and token
    URL (the REST puller, with its default token URL when none is given); the Snowflake account's URL (the
    loader, as jobs/snowflake_load.py derives it from `snowflake.account` when `snowflake.url` is not set).
    `values` fill the deploy-time tokens (the Snowflake account).
    """
    from schemas.partner_contract import PARTNERS_DIR, granted_reveal_fields, load_partner_contract
    from schemas.phi_access import load_access

    rules = load_access()
    hosts: set[str] = set()
    for path in sorted(PARTNERS_DIR.glob("*.yaml")):
        contract = load_partner_contract(path, granted_reveal_fields(rules, path.stem))
        hosts.add(_host(contract.url))
        if contract.auth.token_url:
            hosts.add(_host(contract.auth.token_url))
    g = service_groups(groups)
    pull = g["rest_pull"]
    for feed in pulled_feeds("rest_pull", groups):
        url = pull[f"{feed}.url"]
        hosts.add(_host(url))
        hosts.add(_host(pull.get(f"{feed}.token.url", url)))  # the puller's default token URL is on the same host
    sf = g["snowflake"]
    if sf.get("mode") == "snowpipe":
        url = sf.get("url") or f"https://{sf['account']}.snowflakecomputing.com"
        _host(PLACEHOLDER.sub("deploy-time", url))  # an https URL with a host name, whatever the deploy fills in
        # The host is cut out before the tokens are filled: a deploy-time value may be a CDK token, which a URL
        # parser would lower-case.
        hosts.add(fill(url.split("://", 1)[1].split("/", 1)[0], values, "snowflake.url"))
    return sorted(hosts)


def sftp_hosts(groups: dict[str, dict[str, str]] | None = None) -> list[str]:
    """The partners' SFTP servers the SFTP puller reaches on their port (addresses go into the partner-sftp list:
    SSH carries no name a firewall could check)."""
    g = service_groups(groups)["sftp_pull"]
    return sorted({f"{g[f'{feed}.host']}:{g.get(f'{feed}.port', '22')}" for feed in pulled_feeds("sftp_pull", groups)})
