"""AWS Backup of the DynamoDB tables: a locked vault under the ledgers key and a plan holding daily and monthly copies.

Point-in-time recovery (35 days) covers an operator's mistake; a backup in a vault covers the table's
deletion and keeps the ledgers and the hash-chained audit table for the archive's seven years. The vault
refuses the deletion of a recovery point by anyone and, three days after creation, its lock becomes
compliance mode: no one, the root user included, can shorten the retention. The backup role is the
identity stack's (`backup`, named in the ledgers key's policy); its permissions are AWS's two backup
service-role policies, which AWS keeps in step with what each service's backup needs.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_backup as backup
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms

from infra.aws.config import Names
from infra.storage_policy import ARCHIVE

DAILY_DAYS = 35
LOCK_COOLING_OFF_DAYS = 3


def add_backup(stack: Stack, names: Names, tables: list[dynamodb.Table], key: kms.IKey) -> backup.BackupPlan:
    """The vault, the plan and its selection of `tables`, in `stack`."""
    vault = backup.BackupVault(
        stack, "backup-vault", backup_vault_name=vault_name(names), encryption_key=key,
        block_recovery_point_deletion=True, removal_policy=RemovalPolicy.RETAIN,
        lock_configuration=backup.LockConfiguration(min_retention=Duration.days(DAILY_DAYS),
                                                    max_retention=Duration.days(ARCHIVE.retention_days),
                                                    changeable_for=Duration.days(LOCK_COOLING_OFF_DAYS)))
    plan = backup_plan(stack, "backup-plan", f"{names.prefix}-ledgers", vault)
    role = iam.Role.from_role_name(stack, "backup-role", names.role("backup"), mutable=False)
    plan.add_selection("tables", resources=[backup.BackupResource.from_dynamo_db_table(t) for t in tables],
                       role=role, allow_restores=False)
    return plan


def backup_plan(stack: Stack, construct_id: str, name: str, vault: backup.IBackupVault) -> backup.BackupPlan:
    """A plan into `vault`: daily copies kept 35 days, monthly copies kept the archive's seven years."""
    return backup.BackupPlan(stack, construct_id, backup_plan_name=name, backup_vault=vault, backup_plan_rules=[
        backup.BackupPlanRule(rule_name="daily", delete_after=Duration.days(DAILY_DAYS),
                              schedule_expression=events.Schedule.cron(hour="3", minute="0")),
        backup.BackupPlanRule(rule_name="monthly", delete_after=Duration.days(ARCHIVE.retention_days),
                              schedule_expression=events.Schedule.cron(day="1", hour="4", minute="0"))])


def vault_name(names: Names) -> str:
    """The locked vault's name (the operational store's plan names it, importing no export of the storage stack)."""
    return f"{names.prefix}-ledgers"
