"""The operational store's stack: Aurora PostgreSQL (Serverless v2) for the current state the services read.

What the local server is (infra/local/postgres.py, decision 0034), in AWS (decision 0036): one cluster in the
isolated subnets, reachable on 5432 only from the Managed Flink applications' security group
(infra/aws/network.py); storage, snapshots and Performance Insights under the `operational` CMK; TLS required
(`rds.force_ssl`), IAM database authentication on (the production path that keeps the writer's password out
of the job graph, decision 0035), deletion protection, 35 days of point-in-time recovery and the cluster in
a plan into the locked AWS Backup vault; pgaudit (DDL and role changes), connections and disconnections in the
`postgresql` log, exported to a log group under the logs key.

Logins: the cluster's administrator (`medistream_admin`, as locally: it runs the migrations, which make
`ops_owner` without login), the writer (`ops_writer`, the ingest job) and the reader (`ops_reader`,
services). Each has a secret `medistream-<env>/operational/<login>` in RDS's JSON form (host, port, dbname,
username, password: the host and port written in by the secret's attachment to the cluster) under the
credentials key; the ingest role reads the writer's only (infra/aws/access.py). The writer and reader
passwords are set in the database by provisioning (as `medistream stack up` does locally), not here.
"""

from __future__ import annotations

import json

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_backup as backup
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.aws.acknowledgements import (
    AURORA_INSTANCE_BACKUP,
    DEFAULT_PORT,
    ROTATION_OPERATIONAL,
    acknowledge,
    for_packs,
)
from infra.aws.backup import backup_plan, vault_name
from infra.aws.config import (
    BACKUP_ROLE,
    OPERATIONAL_ADMIN,
    OPERATIONAL_DATABASE,
    OPERATIONAL_ROLES,
    RDS_MONITORING_ROLE,
    Names,
)
from infra.aws.network import LOG_RETENTION, POSTGRES_PORT

# Aurora PostgreSQL 16: the migrations' `SET ROLE ops_owner` after `CREATE ROLE ops_owner` needs the creating
# role to be a member, which PostgreSQL 16 grants with createrole_self_grant (Aurora's administrator is not a
# superuser; locally the bootstrap superuser needs none of it).
ENGINE = rds.DatabaseClusterEngine.aurora_postgres(version=rds.AuroraPostgresEngineVersion.VER_16_13)
# Serverless v2, in Aurora capacity units (2 GiB of memory each). The floor keeps the buffer cache of the
# three tables warm; the ceiling covers the peak (docs/cost.md: 150k records/s, a quarter of them routed here,
# at an assumed 500 rows per ACU-second: 75 ACU).
MIN_ACU = 2
MAX_ACU = 128
BACKUP_DAYS = 35  # point-in-time recovery window (RDS's maximum); the vault keeps daily and monthly copies
PERFORMANCE_INSIGHTS_DAYS = 7  # the free tier's retention
# Cluster parameters. TLS 1.2 or newer, always; pgaudit logs schema and privilege changes (not every write:
# the job inserts every version of every record, tokens only, at up to 150k rows/s, and the lake and the
# archive already keep each one); connections and disconnections name the login and its address.
PARAMETERS = {
    "rds.force_ssl": "1",
    "ssl_min_protocol_version": "TLSv1.2",
    "shared_preload_libraries": "pgaudit,pg_stat_statements",
    "pgaudit.log": "ddl,role",
    "pgaudit.log_parameter": "0",
    "log_statement": "ddl",
    "log_connections": "1",
    "log_disconnections": "1",
    "createrole_self_grant": "set,inherit",
}
# The logins Secrets Manager rotates (hosted single-user rotation), and how often. The writer is not among them
# (acknowledgements.ROTATION_OPERATIONAL says why and how it is rotated).
ROTATED = (OPERATIONAL_ADMIN, "ops_reader")
ROTATION_DAYS = 30
# Characters RDS refuses in a master password, and those a JDBC URL or a shell would need to escape.
EXCLUDED = " %+~`#$&*()|[]{}:;<>?!'/@\"\\,="


class OperationalStack(Stack):
    """The Aurora PostgreSQL cluster of the operational store, its logins' secrets and its backup selection."""

    def __init__(self, scope: Construct, construct_id: str, *, names: Names, vpc: ec2.IVpc,
                 security_group: ec2.ISecurityGroup, rotation_group: ec2.ISecurityGroup, operational_key: kms.IKey,
                 credentials_key: kms.IKey, logs_key: kms.IKey, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.names = names
        # Imported by ARN, as in the credentials stack: given the key itself, the Secret construct would add "the
        # whole account may decrypt through Secrets Manager" to its policy.
        secrets_key = kms.Key.from_key_arn(self, "credentials-key", credentials_key.key_arn)
        self.secrets = {login: self._secret(login, secrets_key) for login in (OPERATIONAL_ADMIN, *OPERATIONAL_ROLES)}
        # The cluster's `postgresql` log, made here (encrypted, a year) before RDS would make it unencrypted.
        log_group = logs.LogGroup(self, "postgresql-log-group",
                                  log_group_name=f"/aws/rds/cluster/{names.operational_cluster}/postgresql",
                                  encryption_key=logs_key, retention=LOG_RETENTION, removal_policy=RemovalPolicy.RETAIN)
        parameters = rds.ParameterGroup(self, "cluster-parameters", engine=ENGINE, parameters=PARAMETERS,
                                        description=f"medistream {names.env} operational store: TLS only, pgaudit")
        monitoring = iam.Role.from_role_name(self, "monitoring-role", names.role(RDS_MONITORING_ROLE), mutable=False)

        def instance(name: str, **kw: object) -> rds.IClusterInstance:
            return rds.ClusterInstance.serverless_v2(
                name, auto_minor_version_upgrade=True, publicly_accessible=False,
                enable_performance_insights=True, performance_insight_encryption_key=operational_key,
                performance_insight_retention=rds.PerformanceInsightRetention.DEFAULT, **kw)  # type: ignore[arg-type]

        self.cluster = rds.DatabaseCluster(
            self, "cluster", engine=ENGINE, cluster_identifier=names.operational_cluster,
            credentials=rds.Credentials.from_secret(self.secrets[OPERATIONAL_ADMIN]),
            default_database_name=OPERATIONAL_DATABASE, port=POSTGRES_PORT,
            # A reader in another zone: a failover target, and where services' reads go.
            writer=instance("writer"), readers=[instance("reader", scale_with_writer=True)],
            serverless_v2_min_capacity=MIN_ACU, serverless_v2_max_capacity=MAX_ACU,
            storage_type=rds.DBClusterStorageType.AURORA_IOPT1,
            vpc=vpc, vpc_subnets=ec2.SubnetSelection(subnets=vpc.isolated_subnets), security_groups=[security_group],
            subnet_group=rds.SubnetGroup(self, "subnets", vpc=vpc, description="the isolated subnets",
                                         subnet_group_name=names.operational_cluster,
                                         vpc_subnets=ec2.SubnetSelection(subnets=vpc.isolated_subnets),
                                         removal_policy=RemovalPolicy.RETAIN),
            storage_encrypted=True, storage_encryption_key=operational_key, iam_authentication=True,
            deletion_protection=True, removal_policy=RemovalPolicy.RETAIN, copy_tags_to_snapshot=True,
            backup=rds.BackupProps(retention=Duration.days(BACKUP_DAYS), preferred_window="02:00-03:00"),
            preferred_maintenance_window="sun:05:00-sun:06:00", parameter_group=parameters,
            cloudwatch_logs_exports=["postgresql"], monitoring_interval=Duration.seconds(60),
            monitoring_role=monitoring)
        self.cluster.node.add_dependency(log_group)
        acknowledge(self.cluster, "AwsSolutions-RDS11", DEFAULT_PORT)
        for name in ("writer", "reader"):
            for_packs(self.cluster.node.find_child(name), "RDSInBackupPlan", AURORA_INSTANCE_BACKUP)
        self.attached = {login: self.secrets[login].attach(self.cluster) for login in OPERATIONAL_ROLES}
        # Rotation by Secrets Manager's hosted PostgreSQL single-user function (in the isolated subnets, the rotation
        # group: the store on 5432, the endpoints on 443): the administrator and the reader, each logging in with its
        # current password and setting a new one. Not the writer (ROTATION_OPERATIONAL: the job keeps its password).
        self.rotations: dict[str, secretsmanager.RotationSchedule] = {}
        for login in ROTATED:
            # The attached secret (host and port written in), so the first rotation finds the host: the cluster
            # attaches its administrator's itself.
            secret = self.cluster.secret if login == OPERATIONAL_ADMIN else self.attached[login]
            if secret is None:  # the cluster's administrator secret: made by the credentials above, never absent
                raise ValueError(f"{login}: the cluster has no administrator secret to rotate")
            self.rotations[login] = secret.add_rotation_schedule(
                f"{login}-rotation", automatically_after=Duration.days(ROTATION_DAYS),
                hosted_rotation=secretsmanager.HostedRotation.postgre_sql_single_user(
                    function_name=f"{names.prefix}-rotate-{login.replace('_', '-')}", exclude_characters=EXCLUDED,
                    vpc=vpc, vpc_subnets=ec2.SubnetSelection(subnets=vpc.isolated_subnets),
                    security_groups=[rotation_group]))
        # The cluster in a plan of its own (daily 35 days, monthly 7 years, as the tables') into the same locked
        # vault, named: the storage stack exports nothing to this one.
        vault = backup.BackupVault.from_backup_vault_name(self, "backup-vault", vault_name(names))
        plan = backup_plan(self, "backup-plan", f"{names.prefix}-operational", vault)
        backup.BackupSelection(self, "backup-selection", backup_plan=plan, allow_restores=False,
                               backup_selection_name=f"{names.prefix}-operational",
                               resources=[backup.BackupResource.from_rds_serverless_cluster(self.cluster)],
                               role=iam.Role.from_role_name(self, "backup-role", names.role(BACKUP_ROLE),
                                                            mutable=False))
        CfnOutput(self, "OperationalEndpoint", value=self.cluster.cluster_endpoint.hostname,
                  description="the operational store's writer endpoint (also in each login's secret: host)")

    def _secret(self, login: str, key: kms.IKey) -> secretsmanager.Secret:
        """A login's secret in RDS's JSON form: a generated password now, host and port once attached."""
        secret = secretsmanager.Secret(
            self, f"{login}-secret", secret_name=self.names.operational_secret(login), encryption_key=key,
            description=f"medistream {self.names.env} operational store: login {login}",
            removal_policy=RemovalPolicy.RETAIN,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"username": login, "dbname": OPERATIONAL_DATABASE,
                                                   "port": POSTGRES_PORT}),
                generate_string_key="password", password_length=40, exclude_characters=EXCLUDED))
        if login not in ROTATED:
            acknowledge(secret, "AwsSolutions-SMG4", ROTATION_OPERATIONAL[login])
            for_packs(secret, "SecretsManagerRotationEnabled", ROTATION_OPERATIONAL[login])
        return secret
