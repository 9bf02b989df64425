"""The doors stack: the SFTP server senders push to, and the ECS Fargate services (ingest API, pullers, loader).

SFTP: a Transfer Family server (SFTP only, a current security policy, a VPC endpoint in the private
subnets behind infra/aws/network.py's sftp group, structured logs to an encrypted log group) with one
service-managed user per landing feed (config.feeds_with("landing"): the contracts, not a hand list),
each locked into its feed's landing prefix twice: a logical home directory that maps `/` to
`/<landing bucket>/feeds/<feed>` (the user sees nothing else) and a role that may only put and read
objects under that prefix (infra/aws/access.py `sftp_grants`). Senders' SSH public keys are added per
user after deploy (`aws transfer import-ssh-public-key`); none is in the template.

Services: one Fargate service per entry of config.SERVICES in the private subnets, no public IP, the
services' security group, its task role from the identity stack (grants: access.py `service_grants`), a
shared execution role that can only pull the services' image and write their log streams. Each task
runs `medistream <command>` with this environment's properties (as the Managed Flink applications get
them) written to the file MEDISTREAM_PROPERTIES names. The image is the repository's Dockerfile, pushed as
`<account>.dkr.ecr.<region>.../medistream-<env>/services:<ServiceImageTag>` to the repository the storage
stack keeps (so it exists, and holds the image, before the services are created); it runs as an
unprivileged user on a read-only root file system with a task volume at /tmp. Roles and the repository
are imported by name (immutable): this stack adds nothing to the identity or storage stacks, and can be
replaced alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aws_cdk import CfnOutput, CfnParameter, Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_transfer as transfer
from constructs import Construct

from infra.aws.acknowledgements import acknowledge
from infra.aws.api import IngestApiFront
from infra.aws.config import (
    OPERATIONAL_ADMIN,
    OPERATIONAL_MIGRATE,
    OPERATIONAL_ROLES,
    PARTNER_FACING,
    SERVICES,
    TASK_EXECUTION,
    Names,
    feeds_with,
    sftp_role,
)
from infra.aws.grants import SERVICES_LOG_PREFIX, Resolver, ecr_repository, landing_prefix, role_policy
from infra.aws.network import INGEST_API_PORT, log_group

# Fargate size and count per service. The API runs two tasks (one per zone at least) for availability; the
# pullers and the loader one each: each holds a Kafka transactional id / Snowflake channel per feed or
# partition, and a second copy would only fence the first.
TASK_SIZE = {"ingest_api": (1024, 2048, 2), "rest_pull": (512, 1024, 1), "sftp_pull": (512, 1024, 1),
             "snowflake_load": (1024, 2048, 1)}
PROPERTIES_FILE = "/tmp/medistream/application_properties.json"  # noqa: S108 - the task's own ephemeral disk
IMAGE_USER = "10001:10001"  # the Dockerfile's unprivileged user (uid:gid), stated again so ECS never runs as root
SCRATCH = "/tmp"  # noqa: S108 - the only writable path of a task (a task volume; the root file system is read-only)
ENV_PROPERTIES = ("properties of this environment: bucket, table, topic and secret names, endpoints, no secret value "
                  "(secrets are read by the task role from Secrets Manager at start, connectors/secrets.py)")
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$"  # an unquoted Snowflake identifier (user, role)
ServiceProperties = Callable[[str, Mapping[str, str]], list[dict[str, object]]]


# Where the ingest API listens in its task (connectors/ingest_api/server.bind_host): every address of the task's
# own network interface, so that the load balancer reaches it; the services' group admits only the VPC on its port.
TASK_BIND_HOST = "0.0.0.0"  # noqa: S104 - the task's own interface, behind its security group and the NLB


def with_bind_host(service: str, groups: list[dict[str, object]]) -> list[dict[str, object]]:
    """The ingest API's property groups with `ingest_api.bind.host` set for a task; other services' unchanged."""
    if service != "ingest_api":
        return groups
    return [{**g, "PropertyMap": {**g["PropertyMap"], "bind.host": TASK_BIND_HOST}}  # type: ignore[dict-item]
            if g["PropertyGroupId"] == "ingest_api" else g for g in groups]


class DoorsStack(Stack):
    """The SFTP server and its users; the ECS cluster, image repository and services."""

    def __init__(self, scope: Construct, construct_id: str, *, names: Names, vpc: ec2.IVpc,
                 sftp_group: ec2.ISecurityGroup, services_group: ec2.ISecurityGroup,
                 egress_subnets: list[ec2.ISubnet], partners_group: ec2.ISecurityGroup, logs_key: kms.IKey,
                 properties: ServiceProperties, snowflake_account: str, migrate_group: ec2.ISecurityGroup,
                 **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.names = names
        self.migrate_group = migrate_group
        self.resolver = Resolver(self, names)
        self.roles = {role: iam.Role.from_role_name(self, f"{role}-role", names.role(role), mutable=False)
                      for role in (*SERVICES, TASK_EXECUTION, OPERATIONAL_MIGRATE,
                                   *(sftp_role(f) for f in feeds_with("landing")))}
        self.policies = {role: role_policy(self.resolver, role, imported) for role, imported in self.roles.items()}
        self._sftp(vpc, sftp_group, logs_key)
        self.egress_subnets, self.partners_group = egress_subnets, partners_group
        self._services(vpc, services_group, logs_key, properties, snowflake_account)

    def _sftp(self, vpc: ec2.IVpc, group: ec2.ISecurityGroup, logs_key: kms.IKey) -> None:
        """The Transfer Family server and one user per landing feed, scoped to its prefix."""
        names = self.names
        logs = log_group(self, "sftp-log-group", f"/medistream/{names.env}/sftp", logs_key)
        logging_role = iam.Role(self, "sftp-logging-role", role_name=f"{names.prefix}-sftp-logging",
                                assumed_by=iam.ServicePrincipal("transfer.amazonaws.com", conditions={
                                    "StringEquals": {"aws:SourceAccount": self.account}}))
        iam.ManagedPolicy(self, "sftp-logging-policy", managed_policy_name=f"{names.prefix}-sftp-logging",
                          roles=[logging_role], statements=[iam.PolicyStatement(
                              actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                              resources=[logs.log_group_arn])])
        self.sftp_server = transfer.CfnServer(
            self, "sftp-server", protocols=["SFTP"], identity_provider_type="SERVICE_MANAGED", domain="S3",
            endpoint_type="VPC", security_policy_name="TransferSecurityPolicy-2024-01",
            endpoint_details=transfer.CfnServer.EndpointDetailsProperty(
                vpc_id=vpc.vpc_id, subnet_ids=[s.subnet_id for s in vpc.isolated_subnets],
                security_group_ids=[group.security_group_id]),
            logging_role=logging_role.role_arn, structured_log_destinations=[logs.log_group_arn])
        bucket = names.buckets["landing"]
        self.sftp_users: dict[str, transfer.CfnUser] = {}
        for feed in feeds_with("landing"):
            user = transfer.CfnUser(
                self, f"sftp-user-{feed}", server_id=self.sftp_server.attr_server_id, user_name=feed,
                role=self.roles[sftp_role(feed)].role_arn, home_directory_type="LOGICAL",
                home_directory_mappings=[transfer.CfnUser.HomeDirectoryMapEntryProperty(
                    entry="/", target=f"/{bucket}/{landing_prefix()}{feed}")])
            user.node.add_dependency(self.policies[sftp_role(feed)])
            self.sftp_users[feed] = user

    def _services(self, vpc: ec2.IVpc, group: ec2.ISecurityGroup, logs_key: kms.IKey,
                  properties: ServiceProperties, snowflake_account: str) -> None:
        """The ECS cluster and one Fargate service per config.SERVICES entry, from the storage stack's repository."""
        names = self.names
        tag = CfnParameter(self, "ServiceImageTag", type="String", min_length=1,
                           description=f"tag of the services' image in {ecr_repository(names)}")
        brokers = CfnParameter(self, "MskBootstrapServers", type="String", min_length=1,
                               description="MSK bootstrap brokers for IAM auth (port 9098)")
        self.repository = ecr.Repository.from_repository_name(self, "services-repository", ecr_repository(names))
        self.cluster = ecs.Cluster(self, "cluster", cluster_name=names.prefix, vpc=vpc,
                                   container_insights_v2=ecs.ContainerInsights.ENABLED)
        # The Snowflake loader's login (service_overlay.json's tokens); the account is the network stack's parameter,
        # which also puts its URL in the egress allow-list.
        snowflake = {what: CfnParameter(self, f"Snowflake{what.title()}", type="String", allowed_pattern=IDENTIFIER,
                                        description=f"the Snowflake {what} the loader connects as (key-pair auth)")
                     for what in ("user", "role")}
        values = {"AWS_ACCOUNT_ID": self.account, "AWS_REGION": self.region,
                  "MSK_BOOTSTRAP_SERVERS": brokers.value_as_string, "SNOWFLAKE_ACCOUNT": snowflake_account,
                  "SNOWFLAKE_USER": snowflake["user"].value_as_string,
                  "SNOWFLAKE_ROLE": snowflake["role"].value_as_string}
        self.services: dict[str, ecs.FargateService] = {}
        for service, (command, _group) in SERVICES.items():
            cpu, memory, count = TASK_SIZE[service]
            task = ecs.FargateTaskDefinition(self, f"{service}-task", family=f"{names.prefix}-{service}", cpu=cpu,
                                             memory_limit_mib=memory, task_role=self.roles[service],
                                             execution_role=self.roles[TASK_EXECUTION])
            logs = log_group(self, f"{service}-log-group", f"/medistream/{names.env}/{SERVICES_LOG_PREFIX}/{service}",
                             logs_key)
            doc = self.to_json_string(with_bind_host(service, properties(service, values)))
            container = task.add_container(
                service, image=ecs.ContainerImage.from_ecr_repository(self.repository, tag.value_as_string),
                entry_point=["sh", "-c"],
                command=[f'mkdir -p "$(dirname "$MEDISTREAM_PROPERTIES")" && printf "%s" "$MEDISTREAM_PROPERTIES_DOC"'
                         f' > "$MEDISTREAM_PROPERTIES" && exec medistream {command}'],
                environment={"MEDISTREAM_PROPERTIES": PROPERTIES_FILE, "MEDISTREAM_PROPERTIES_DOC": doc},
                logging=ecs.LogDriver.aws_logs(stream_prefix=service, log_group=logs),
                readonly_root_filesystem=True, user=IMAGE_USER,
                stop_timeout=Duration.seconds(60))  # pullers finish the page or file in hand on SIGTERM
            task.add_volume(name="scratch")  # the task's ephemeral storage: the properties file, MEDISTREAM_HOME
            container.add_mount_points(ecs.MountPoint(container_path=SCRATCH, source_volume="scratch",
                                                      read_only=False))
            if service == "ingest_api":
                container.add_port_mappings(ecs.PortMapping(container_port=INGEST_API_PORT))
            acknowledge(task, "AwsSolutions-ECS2", ENV_PROPERTIES)
            singleton = count == 1
            self.services[service] = ecs.FargateService(
                self, f"{service}-service", service_name=f"{names.prefix}-{service}", cluster=self.cluster,
                task_definition=task, desired_count=count, assign_public_ip=False,
                security_groups=[group, self.partners_group] if service in PARTNER_FACING else [group],
                vpc_subnets=ec2.SubnetSelection(subnets=self.egress_subnets) if service in PARTNER_FACING
                else ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
                circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
                min_healthy_percent=0 if singleton else 100, max_healthy_percent=100 if singleton else 200)
        self.api = IngestApiFront(self, names, vpc, self.services["ingest_api"], logs_key)
        self._migration_task(vpc, logs_key, tag.value_as_string)

    def _migration_task(self, vpc: ec2.IVpc, logs_key: kms.IKey, tag: str) -> None:
        """The operational store's migrations as a one-off Fargate task (no service: an operator or the release
        pipeline runs it, `aws ecs run-task`, after each deploy that brings a migration): the services' image runs
        `medistream infra migrate-operational` with the administrator's secret, then sets the logins' passwords from
        theirs. Its own role (the three secrets' names only), its own group (the store on 5432), isolated subnets."""
        names = self.names
        task = ecs.FargateTaskDefinition(self, "migrate-task", family=f"{names.prefix}-{OPERATIONAL_MIGRATE}",
                                         cpu=256, memory_limit_mib=512, task_role=self.roles[OPERATIONAL_MIGRATE],
                                         execution_role=self.roles[TASK_EXECUTION])
        logs = log_group(self, "migrate-log-group",
                         f"/medistream/{names.env}/{SERVICES_LOG_PREFIX}/{OPERATIONAL_MIGRATE}", logs_key)
        container = task.add_container(
            "migrate", image=ecs.ContainerImage.from_ecr_repository(self.repository, tag),
            command=["infra", "migrate-operational", "--region", self.region,
                     "--admin-secret", names.operational_secret(OPERATIONAL_ADMIN),
                     *(arg for login in OPERATIONAL_ROLES
                       for arg in ("--login-secret", names.operational_secret(login)))],
            logging=ecs.LogDriver.aws_logs(stream_prefix=OPERATIONAL_MIGRATE, log_group=logs),
            readonly_root_filesystem=True, user=IMAGE_USER)
        task.add_volume(name="scratch")
        container.add_mount_points(ecs.MountPoint(container_path=SCRATCH, source_volume="scratch", read_only=False))
        self.migration_task = task
        CfnOutput(self, "OperationalMigrateTask", value=f"{self.cluster.cluster_name} {task.family}",
                  description="cluster and task definition of the operational store's migrations (aws ecs run-task; "
                              "network: the network stack's MigrateNetwork output)")

