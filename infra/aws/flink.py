"""The short-lived stack: one Managed Flink application per job, its grants, log group, alarms and dashboard.

Each application runs the zip `medistream package` builds, from the artifact bucket (its key a
parameter: the zip's name carries version and commit), on Flink 2.2 in the VPC's private subnets,
with snapshots and checkpointing on, autoscaling, and the runtime properties the local run reads
(conf/application_properties.json + conf/environments/production.json, this environment's names)
handed in by the caller (tools/infra.py: `tools.package.application_properties`). Every IAM grant
comes from infra/aws/access.py, naming buckets and tables by name: this stack takes no export from
the storage stack (it depends on it for order only), so it can be replaced without pinning the data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

from aws_cdk import ArnFormat, CfnParameter, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisanalyticsv2 as msf
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.aws.config import FLINK_JOBS, OPERATIONAL_DATABASE, PARTNER_FACING, Names, base_groups
from infra.aws.grants import Resolver, role_policy
from infra.aws.network import POSTGRES_PORT, log_group

RUNTIME = "FLINK-2_2"  # the zip's target (tools/package.py: Flink 2.2.0, Python 3.12)
# job -> (parallelism group, key): the same settings the local run reads.
PARALLELISM = {"ingest": ("runtime", "parallelism"), "partner_delivery": ("partners", "parallelism")}
_COLON = ArnFormat.COLON_RESOURCE_NAME
PropertiesFor = Callable[[str, Mapping[str, str]], list[dict[str, object]]]


# Where the ingest job finds the RDS CA bundle (AWS's global-bundle.pem): the zip carries it at this path below its
# root (tools/package.py, pinned). Relative: the JDBC driver opens it on each TaskManager from its working directory,
# and where Managed Flink unpacks the zip there is not documented (decision 0041), hence still a parameter.
RDS_CA_BUNDLE = "application-code/certs/rds-global-bundle.pem"


def with_operational(job: str, groups: list[dict[str, object]], names: Names,
                     ca_bundle: str) -> list[dict[str, object]]:
    """The ingest application's groups with the `operational` group (connectors/properties.OperationalConfig):
    the writer login's secret of this environment, its certificate verified against the RDS CA bundle."""
    if job != "ingest":
        return groups
    group = {"secret": names.operational_secret("ops_writer"), "sslmode": "verify-full", "sslrootcert": ca_bundle,
             "database": OPERATIONAL_DATABASE,
             "lineage.namespace": f"postgres://{names.operational_cluster}:{POSTGRES_PORT}"}
    return [*(g for g in groups if g["PropertyGroupId"] != "operational"),
            {"PropertyGroupId": "operational", "PropertyMap": group}]


class FlinkStack(Stack):
    """The Managed Flink applications of one environment."""

    def __init__(self, scope: Construct, construct_id: str, *, names: Names, roles: Mapping[str, iam.IRole],
                 logs_key: kms.IKey,
                 vpc: ec2.IVpc, security_group: ec2.ISecurityGroup, properties: PropertiesFor,
                 egress_subnets: list[ec2.ISubnet], partners_group: ec2.ISecurityGroup,
                 **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.names = names
        zip_key = CfnParameter(self, "ApplicationZipKey", type="String", min_length=1,
                               description="key of the `medistream package` zip in the artifact bucket")
        brokers = CfnParameter(self, "MskBootstrapServers", type="String", min_length=1,
                               description="MSK bootstrap brokers for IAM auth (port 9098)")
        values = {"AWS_ACCOUNT_ID": self.account, "AWS_REGION": self.region,
                  "MSK_BOOTSTRAP_SERVERS": brokers.value_as_string}
        ca_bundle = CfnParameter(self, "OperationalSslRootCert", type="String", min_length=1, default=RDS_CA_BUNDLE,
                                 description="path of the RDS CA bundle the ingest job verifies the operational "
                                             "store's certificate with (decision 0036)")
        checkpoints = base_groups()["checkpoints"]
        self.applications: dict[str, msf.CfnApplication] = {}
        self.log_groups: dict[str, logs.LogGroup] = {}
        for job in FLINK_JOBS:
            group = log_group(self, f"{job}-log-group", f"/medistream/{names.env}/flink/{job}", logs_key)
            stream = logs.LogStream(self, f"{job}-log-stream", log_group=group, log_stream_name="application")
            self.log_groups[job] = group
            resolver = Resolver(self, names, {job: group.log_group_arn})
            policy = role_policy(resolver, job, roles[job])
            partner_facing = job in PARTNER_FACING  # partner delivery calls the partners' APIs through NAT
            subnets = egress_subnets if partner_facing else vpc.isolated_subnets
            groups = [security_group, partners_group] if partner_facing else [security_group]
            group_name, key = PARALLELISM[job]
            app = msf.CfnApplication(
                self, f"{job}-application", application_name=names.application(job), runtime_environment=RUNTIME,
                service_execution_role=roles[job].role_arn,
                application_configuration=msf.CfnApplication.ApplicationConfigurationProperty(
                    application_code_configuration=msf.CfnApplication.ApplicationCodeConfigurationProperty(
                        code_content_type="ZIPFILE", code_content=msf.CfnApplication.CodeContentProperty(
                            s3_content_location=msf.CfnApplication.S3ContentLocationProperty(
                                bucket_arn=resolver.bucket_arn("artifacts"), file_key=zip_key.value_as_string))),
                    application_snapshot_configuration=msf.CfnApplication.ApplicationSnapshotConfigurationProperty(
                        snapshots_enabled=True),
                    environment_properties=msf.CfnApplication.EnvironmentPropertiesProperty(property_groups=[
                        msf.CfnApplication.PropertyGroupProperty(property_group_id=str(g["PropertyGroupId"]),
                                                                 property_map=cast(Mapping[str, str], g["PropertyMap"]))
                        for g in with_operational(job, properties(job, values), names,
                                                  ca_bundle.value_as_string)]),
                    flink_application_configuration=msf.CfnApplication.FlinkApplicationConfigurationProperty(
                        checkpoint_configuration=msf.CfnApplication.CheckpointConfigurationProperty(
                            configuration_type="CUSTOM", checkpointing_enabled=True,
                            checkpoint_interval=int(checkpoints["interval.ms"]), min_pause_between_checkpoints=1000),
                        monitoring_configuration=msf.CfnApplication.MonitoringConfigurationProperty(
                            configuration_type="CUSTOM", log_level="INFO", metrics_level="OPERATOR"),
                        parallelism_configuration=msf.CfnApplication.ParallelismConfigurationProperty(
                            configuration_type="CUSTOM", auto_scaling_enabled=True, parallelism_per_kpu=1,
                            parallelism=int(base_groups()[group_name][key]))),
                    vpc_configurations=[msf.CfnApplication.VpcConfigurationProperty(
                        security_group_ids=[g.security_group_id for g in groups],
                        subnet_ids=[s.subnet_id for s in subnets])]))
            app.node.add_dependency(policy)
            msf.CfnApplicationCloudWatchLoggingOption(
                self, f"{job}-logging", application_name=app.ref,
                cloud_watch_logging_option=msf.CfnApplicationCloudWatchLoggingOption.CloudWatchLoggingOptionProperty(
                    log_stream_arn=self.format_arn(service="logs", resource="log-group",
                                                   resource_name=f"{group.log_group_name}:log-stream:"
                                                                 f"{stream.log_stream_name}",
                                                   arn_format=_COLON)))
            self.applications[job] = app
