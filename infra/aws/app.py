"""The CDK app: one environment's stacks, checked by cdk-nag's AwsSolutions, HIPAA Security and NIST 800-53 rev 5.

Stacks by lifetime and blast radius, deployed in this order: identity (roles) -> keys -> credentials
(secrets) -> archive-replica (in the replica region: the archive's replica bucket and key) -> storage -> audit
(the trail, alerts on guard changes) -> network -> streaming (MSK, topics) -> operational (Aurora PostgreSQL,
its logins' secrets) -> doors (SFTP server and users,
ECS services, the API front door) -> flink (applications and their
grants) -> monitoring (alarms, dashboard). Keys, secrets, storage, the trail and the clusters are retained on delete;
the applications can be torn down and rebuilt without touching data or keys.
Built by tools/infra.py (`medistream infra synth|check`, and the CDK CLI's app command in cdk.json),
which hands in the runtime properties (`tools.package` makes them; infra sits below tools).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import App, Aws, Environment, Stack, Tags, Validations
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks, NIST80053R5Checks

from infra.aws.audit import AuditStack
from infra.aws.config import DEFAULT_REPLICA_REGION, names
from infra.aws.credentials import CredentialsStack
from infra.aws.doors import DoorsStack, ServiceProperties
from infra.aws.flink import FlinkStack, PropertiesFor
from infra.aws.keys import IdentityStack, KeysStack
from infra.aws.monitoring import MonitoringStack
from infra.aws.network import NetworkStack
from infra.aws.operational import OperationalStack
from infra.aws.pipeline import PipelineStack
from infra.aws.replica import ArchiveReplicaStack
from infra.aws.storage import StorageStack
from infra.aws.streaming import StreamingStack

# Feature flags, here only (cdk.json names none: every entry builds the App with these). The access-log
# bucket takes S3's log delivery by bucket policy, not by the legacy LogDeliveryWrite ACL; references
# between stacks are strong (an export in use cannot be removed: keys and roles outlive the applications).
CONTEXT = {"@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
           "@aws-cdk/core:defaultCrossStackReferences": "strong"}


@dataclass
class Stacks:
    """The stacks of one environment, by name."""

    identity: IdentityStack
    keys: KeysStack
    credentials: CredentialsStack
    replica: ArchiveReplicaStack
    storage: StorageStack
    audit: AuditStack
    network: NetworkStack
    streaming: StreamingStack
    operational: OperationalStack
    doors: DoorsStack
    flink: FlinkStack
    monitoring: MonitoringStack

    def all(self) -> list[Stack]:
        """Every stack, in deploy order."""
        return [self.identity, self.keys, self.credentials, self.replica, self.storage, self.audit, self.network,
                self.streaming, self.operational, self.doors, self.flink, self.monitoring]


def add_stacks(app: App, env: str, properties: PropertiesFor, service_properties: ServiceProperties,
               account: str | None = None, region: str | None = None,
               replica_region: str = DEFAULT_REPLICA_REGION) -> Stacks:
    """One environment's stacks in `app` (account and region: deploy-time tokens unless given; the archive's replica
    stack in `replica_region`)."""
    where = Environment(account=account, region=region) if account and region else None
    n = names(env, account or Aws.ACCOUNT_ID)
    kw = {"env": where}
    identity = IdentityStack(app, f"medistream-{env}-identity", names=n, **kw)
    keys = KeysStack(app, f"medistream-{env}-keys", names=n, roles=dict(identity.roles), **kw)
    credentials = CredentialsStack(app, f"medistream-{env}-credentials", names=n, key=keys.keys["credentials"],
                                   **kw)
    # The archive's replica region: its own stack there (a region of its own, the account still the deploy's).
    replica = ArchiveReplicaStack(app, f"medistream-{env}-archive-replica", names=n,
                                  env=Environment(account=account, region=replica_region))
    replica.add_stack_dependency(identity, "its key policy names the replication role")
    storage = StorageStack(app, f"medistream-{env}-storage", names=n, keys=dict(keys.keys),
                           replica_region=replica_region, **kw)
    storage.add_stack_dependency(replica, "S3 refuses a replication rule whose destination bucket does not exist")
    audit = AuditStack(app, f"medistream-{env}-audit", names=n, audit_key=keys.keys["audit"],
                       logs_key=keys.keys["logs"], key_arns=[k.key_arn for k in keys.keys.values()], **kw)
    audit.add_stack_dependency(storage, "the trail writes to the audit bucket, whose policy admits it")
    network = NetworkStack(app, f"medistream-{env}-network", names=n, logs_key=keys.keys["logs"], **kw)
    streaming = StreamingStack(app, f"medistream-{env}-streaming", names=n, vpc=network.vpc,
                               security_group=network.msk_sg, streaming_key=keys.keys["streaming"],
                               logs_key=keys.keys["logs"], **kw)
    operational = OperationalStack(app, f"medistream-{env}-operational", names=n, vpc=network.vpc,
                                   security_group=network.operational_sg, rotation_group=network.rotation_sg,
                                   operational_key=keys.keys["operational"],
                                   credentials_key=keys.keys["credentials"], logs_key=keys.keys["logs"], **kw)
    operational.add_stack_dependency(storage, "its backup plan writes into the storage stack's locked vault, named")
    doors = DoorsStack(app, f"medistream-{env}-doors", names=n, vpc=network.vpc, sftp_group=network.sftp_sg,
                       services_group=network.services_sg, egress_subnets=network.egress_subnets,
                       partners_group=network.partners_sg, logs_key=keys.keys["logs"],
                       properties=service_properties, snowflake_account=network.snowflake_account.value_as_string,
                       migrate_group=network.migrate_sg, **kw)
    doors.add_stack_dependency(storage, "SFTP users and services write its buckets and tables, named, not imported")
    doors.add_stack_dependency(streaming, "the services read and write its topics, named, not imported")
    doors.add_stack_dependency(credentials, "the services read its secrets, named, not imported")
    doors.add_stack_dependency(operational, "the migration task reads the operational logins' secrets, named")
    flink = FlinkStack(app, f"medistream-{env}-flink", names=n, roles=dict(identity.roles),
                       logs_key=keys.keys["logs"], vpc=network.vpc, security_group=network.apps_sg,
                       egress_subnets=network.egress_subnets, partners_group=network.partners_sg,
                       properties=properties, **kw)
    flink.add_stack_dependency(storage, "the applications read and write its buckets and tables, named, not imported")
    flink.add_stack_dependency(streaming, "the applications read and write its topics, named, not imported")
    flink.add_stack_dependency(operational, "the ingest application writes the operational store, its secret named")
    monitoring = MonitoringStack(app, f"medistream-{env}-monitoring", names=n, logs_key=keys.keys["logs"], **kw)
    monitoring.add_stack_dependency(flink, "alarms and dashboard name the applications")
    stacks = Stacks(identity, keys, credentials, replica, storage, audit, network, streaming, operational, doors, flink,
                    monitoring)
    # The release pipeline (issue 23, decision 0031): its own keys, buckets and stage roles.
    pipeline = PipelineStack(app, f"medistream-{env}-pipeline", names=n, **kw)
    pipeline.add_stack_dependency(identity, "its key and bucket policies name the applications' roles by ARN")
    pipeline.add_stack_dependency(storage, "the deploy stage appends to the audit table, named, not imported")
    for stack in [*stacks.all(), pipeline]:
        Tags.of(stack).add("project", "medistream")
        Tags.of(stack).add("environment", env)
    return stacks


def check(app: App) -> None:
    """Attach the three cdk-nag packs: any unacknowledged finding fails synthesis."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), HIPAASecurityChecks(app), NIST80053R5Checks(app))


def build(env: str, properties: PropertiesFor, service_properties: ServiceProperties, outdir: str | None = None,
          nag: bool = True, replica_region: str = DEFAULT_REPLICA_REGION) -> tuple[App, Stacks]:
    """An app holding one environment's stacks, with the nag packs unless `nag` is False."""
    app = App(outdir=outdir, context=CONTEXT) if outdir else App(context=CONTEXT)
    stacks = add_stacks(app, env, properties, service_properties, replica_region=replica_region)
    if nag:
        check(app)
    return app, stacks
