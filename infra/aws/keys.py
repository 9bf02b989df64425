"""The long-lived stacks at the bottom: the pipeline's roles (identity) and the customer-managed keys.

Roles come first and carry no permission of their own: a KMS key policy may only name a principal
that exists, and every grant is attached later by the stack that owns the resource's use
(infra/aws/flink.py, from infra/aws/access.py). Each key's policy names the roles allowed to use it
and nothing broader: the account (hence IAM administrators) may administer the key and let AWS
services create grants for their resources, never encrypt or decrypt with it.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, DefaultStackSynthesizer, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.aws.access import DECRYPT, ENCRYPT, key_users
from infra.aws.acknowledgements import BACKUP_MANAGED_POLICIES, RDS_MONITORING_POLICY, acknowledge
from infra.aws.api import waf_log_group
from infra.aws.config import BACKUP_ROLE, RDS_MONITORING_ROLE, SERVICE_KEYS, Names, key_domains, role_principals

ADMIN_ACTIONS = ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                 "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource",
                 "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"]


class IdentityStack(Stack):
    """Every role of the pipeline, each assumable by its one AWS service for this account only.

    One per Managed Flink application, one per ECS service plus the tasks' execution role, one per
    Transfer Family user (a landing feed's sender): config.role_principals().
    """

    def __init__(self, scope: Construct, construct_id: str, *, names: Names, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.roles = {role: iam.Role(self, f"{role}-role", role_name=names.role(role), assumed_by=iam.ServicePrincipal(
                          service, conditions={"StringEquals": {"aws:SourceAccount": self.account}}),
                          description=f"{service.split('.')[0]}: {role} ({names.env})")
                      for role, service in role_principals().items()}
        # Backups only: a restore is an operator's decision, made with the operator's own role.
        backup_policy = "service-role/AWSBackupServiceRolePolicyForBackup"
        self.roles[BACKUP_ROLE].add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name(backup_policy))
        acknowledge(self.roles[BACKUP_ROLE], f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                                             f"{backup_policy}]", BACKUP_MANAGED_POLICIES)
        # RDS enhanced monitoring publishes the operational store's OS metrics to CloudWatch Logs (RDSOSMetrics).
        monitoring_policy = "service-role/AmazonRDSEnhancedMonitoringRole"
        self.roles[RDS_MONITORING_ROLE].add_managed_policy(
            iam.ManagedPolicy.from_aws_managed_policy_name(monitoring_policy))
        acknowledge(self.roles[RDS_MONITORING_ROLE], f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                                                     f"{monitoring_policy}]", RDS_MONITORING_POLICY)


class KeysStack(Stack):
    """A CMK per PHI domain and per store, rotated yearly, each with a policy naming its users."""

    def __init__(self, scope: Construct, construct_id: str, *, names: Names, roles: dict[str, iam.IRole],
                 **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.keys: dict[str, kms.Key] = {}
        for name in (*key_domains(), *SERVICE_KEYS):
            statements = [iam.PolicyStatement(
                sid="AccountAdministersNeverUses", principals=[iam.AccountRootPrincipal()],
                actions=ADMIN_ACTIONS, resources=["*"])]
            statements.append(iam.PolicyStatement(
                sid="AwsServicesCreateGrantsForTheirResources", principals=[iam.AccountRootPrincipal()],
                actions=["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"], resources=["*"],
                conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}}))
            for sid, level in (("RolesEncryptAndDecrypt", ENCRYPT + DECRYPT), ("RolesDecrypt", DECRYPT)):
                users = key_users(name, level)
                if users:
                    statements.append(iam.PolicyStatement(
                        sid=sid, principals=[roles[u] for u in users], actions=sorted(set(level)), resources=["*"]))
            if name == "logs":
                statements.append(iam.PolicyStatement(
                    sid="CloudWatchLogsOfThisEnvironment",
                    principals=[iam.ServicePrincipal(f"logs.{self.region}.amazonaws.com")],
                    actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                    resources=["*"], conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": [
                        f"arn:{self.partition}:logs:{self.region}:{self.account}:log-group:{group}"
                        for group in (f"/medistream/{names.env}/*", waf_log_group(names),
                                      f"/aws/rds/cluster/{names.operational_cluster}/*")]}}))
                statements.append(iam.PolicyStatement(
                    sid="CloudWatchAlarmsToEncryptedTopics",
                    principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"], resources=["*"],
                    conditions={"StringEquals": {"aws:SourceAccount": self.account}}))
            if name == "logs":
                statements.append(iam.PolicyStatement(
                    sid="EventBridgeToEncryptedTopics", principals=[iam.ServicePrincipal("events.amazonaws.com")],
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"], resources=["*"],
                    conditions={"StringEquals": {"aws:SourceAccount": self.account}}))
            if name == "audit":
                statements.extend(self._cloudtrail(names))
            if name == "credentials":
                statements.append(self._deploy_writes_secrets(names))
                statements.append(self._rotation_reads_and_writes_operational_secrets(names))
            key = kms.Key(self, f"{name}-key", alias=names.alias(name), enable_key_rotation=True,
                          rotation_period=Duration.days(365), description=f"medistream {names.env}: {name}",
                          removal_policy=RemovalPolicy.RETAIN, pending_window=Duration.days(30),
                          policy=iam.PolicyDocument(statements=statements))
            self.keys[name] = key

    def _deploy_writes_secrets(self, names: Names) -> iam.PolicyStatement:
        """The credentials key: CloudFormation (the CDK bootstrap's execution role) writes this environment's secrets.

        Creating a secret under a CMK needs the caller's GenerateDataKey and Decrypt on the key, and so do a secret's
        attachment to the Aurora cluster (it writes host and port into the secret) and the cluster's master password
        (a dynamic reference CloudFormation resolves). Only through Secrets Manager, only for this environment's
        secrets: the execution role can never decrypt a secret outside a deploy's Secrets Manager calls.
        """
        role = (f"arn:{self.partition}:iam::{self.account}:role/cdk-{DefaultStackSynthesizer.DEFAULT_QUALIFIER}"
                f"-cfn-exec-role-{self.account}-{self.region}")
        return iam.PolicyStatement(
            sid="DeployWritesThisEnvironmentsSecrets", principals=[iam.ArnPrincipal(role)],
            actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=["*"], conditions={
                "StringEquals": {"kms:ViaService": f"secretsmanager.{self.region}.amazonaws.com"},
                "StringLike": {"kms:EncryptionContext:SecretARN": self.format_arn(
                    service="secretsmanager", resource="secret", resource_name=f"{names.prefix}/*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME)}})

    def _rotation_reads_and_writes_operational_secrets(self, names: Names) -> iam.PolicyStatement:
        """The credentials key: the operational logins' rotation functions read and write their secrets.

        Secrets Manager's hosted rotation makes each function and its role inside the operational stack's transform,
        under a name this app does not choose, so this statement cannot name the role: it lets IAM decide (the
        transform gives the function's role Decrypt and GenerateDataKey on this key), only through Secrets Manager
        and only for this environment's operational secrets. The one delegation to IAM in any key policy here.
        """
        return iam.PolicyStatement(
            sid="RotationOfThisEnvironmentsOperationalSecrets", principals=[iam.AccountRootPrincipal()],
            actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=["*"], conditions={
                "StringEquals": {"kms:ViaService": f"secretsmanager.{self.region}.amazonaws.com",
                                 "kms:CallerAccount": self.account},
                "StringLike": {"kms:EncryptionContext:SecretARN": self.format_arn(
                    service="secretsmanager", resource="secret",
                    resource_name=f"{names.prefix}/operational/*", arn_format=ArnFormat.COLON_RESOURCE_NAME)}})

    def _cloudtrail(self, names: Names) -> list[iam.PolicyStatement]:
        """The audit key: this environment's trail encrypts its log files with it, and nothing else may."""
        trail = f"arn:{self.partition}:cloudtrail:{self.region}:{self.account}:trail/{names.trail}"
        return [iam.PolicyStatement(
            sid="CloudTrailEncryptsThisEnvironmentsTrail",
            principals=[iam.ServicePrincipal("cloudtrail.amazonaws.com")],
            actions=["kms:GenerateDataKey*"], resources=["*"], conditions={
                "StringEquals": {"aws:SourceArn": trail},
                "StringLike": {"kms:EncryptionContext:aws:cloudtrail:arn":
                               f"arn:{self.partition}:cloudtrail:*:{self.account}:trail/{names.trail}"}}),
            iam.PolicyStatement(
                sid="CloudTrailDescribesTheKey", principals=[iam.ServicePrincipal("cloudtrail.amazonaws.com")],
                actions=["kms:DescribeKey"], resources=["*"], conditions={"StringEquals": {"aws:SourceArn": trail}})]
