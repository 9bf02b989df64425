"""The CDK app (infra/aws/): both environments synthesize with 0 unacknowledged cdk-nag findings, and the
properties that matter most hold in the templates (archive lock, bucket keys and TLS, key policies by
domain, applications in private subnets with snapshots, no security group open to the internet), with
the names the code itself uses. One synth per environment per session (each ~10-15 s here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.aws.access import DECRYPT, ENCRYPT
from infra.aws.config import (
    BUCKET_KEYS,
    ENVIRONMENTS,
    FLINK_JOBS,
    key_domains,
    names,
    partner_domains,
    production_overlay,
)
from infra.storage_policy import ARCHIVE
from tools import infra as infra_tool


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def synthesized(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One environment's app, synthesized once with the nag packs: stacks and their templates."""
    env = request.param
    out = tmp_path_factory.mktemp(f"cdk-{env}")
    app, stacks = infra_tool.build(env, outdir=str(out))
    app.synth()  # raises ValidationFailed on any unacknowledged cdk-nag finding
    templates = {s.stack_name: json.loads((out / f"{s.artifact_id}.template.json").read_text()) for s in stacks.all()}
    return {"env": env, "out": out, "stacks": stacks, "templates": templates}


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in template["Resources"].items() if v["Type"] == kind}


def _template(s: dict[str, Any], stack: Any) -> dict[str, Any]:
    return s["templates"][stack.stack_name]


def test_synth_has_no_unacknowledged_findings(synthesized: dict[str, Any]) -> None:
    report = json.loads((synthesized["out"] / "validation-report.json").read_text())
    assert report["pluginReports"] == []
    assert len(synthesized["templates"]) == len(synthesized["stacks"].all()) == 12
    skips = [skip for t in synthesized["templates"].values() for r in t["Resources"].values()
             for skip in r.get("Metadata", {}).get("checkov", {}).get("skip", [])]
    assert len(skips) == 7 and all(len(skip["comment"]) > 40 for skip in skips)  # each skip says why


def test_archive_object_lock_and_lifecycle(synthesized: dict[str, Any]) -> None:
    storage = synthesized["stacks"].storage
    archive = _resources(_template(synthesized, storage), "AWS::S3::Bucket")[
        storage.get_logical_id(storage.buckets["archive"].node.default_child)]
    assert archive["ObjectLockEnabled"] is True
    assert archive["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == {
        "Mode": "COMPLIANCE", "Days": ARCHIVE.retention_days}
    assert ARCHIVE.retention_days >= 7 * 365
    (rule,) = archive["LifecycleConfiguration"]["Rules"]
    assert rule["Transitions"] == [{"StorageClass": "GLACIER_IR", "TransitionInDays": 30}]
    locked = {name: props for name, props in _resources(_template(synthesized, storage), "AWS::S3::Bucket").items()
              if props.get("ObjectLockEnabled")}
    assert set(locked) == {storage.get_logical_id(storage.buckets[b].node.default_child) for b in ("archive", "audit")}
    assert all(p["ObjectLockConfiguration"] == archive["ObjectLockConfiguration"] for p in locked.values())


def test_archive_replicated_to_a_locked_bucket_under_its_own_key_in_the_replica_region(
        synthesized: dict[str, Any]) -> None:
    """The archive replicates every version (SSE-KMS ones included, delete markers not) to the replica bucket in the
    replica region, re-encrypted with that region's key, by the replication role; the replica bucket is under Object
    Lock (compliance, the archive's retention), versioned, TLS only, refusing other keys; the replica key names the
    replication role alone, to encrypt only; the role's policy reads the archive and writes the replica, nothing
    else; the storage stack refuses to be deployed into the replica region."""
    from infra.aws.access import REPLICATION_DESTINATION, REPLICATION_SOURCE
    from infra.aws.config import DEFAULT_REPLICA_REGION

    stacks, env = synthesized["stacks"], synthesized["env"]
    storage, replica = stacks.storage, stacks.replica
    assert replica.region == DEFAULT_REPLICA_REGION and replica.stack_name == f"medistream-{env}-archive-replica"
    st = _template(synthesized, storage)
    archive = _resources(st, "AWS::S3::Bucket")[storage.get_logical_id(storage.buckets["archive"].node.default_child)]
    config = archive["ReplicationConfiguration"]
    assert _flat(config["Role"]) == (
        f"arn:<AWS::Partition>:iam::<AWS::AccountId>:role/medistream-{env}-archive-replication")
    (rule,) = config["Rules"]
    assert rule["Status"] == "Enabled" and rule["Filter"] == {"Prefix": ""}
    assert rule["DeleteMarkerReplication"] == {"Status": "Disabled"}
    assert rule["SourceSelectionCriteria"] == {"SseKmsEncryptedObjects": {"Status": "Enabled"}}
    destination = rule["Destination"]
    assert _flat(destination["Bucket"]) == (
        f"arn:<AWS::Partition>:s3:::medistream-archive-replica-{env}-<AWS::AccountId>")
    assert _flat(destination["EncryptionConfiguration"]["ReplicaKmsKeyID"]) == (
        f"arn:<AWS::Partition>:kms:{DEFAULT_REPLICA_REGION}:<AWS::AccountId>:alias/medistream-{env}/archive-replica")
    assert json.dumps(st["Rules"]["ReplicaInAnotherRegion"]["Assertions"][0]["Assert"]) == json.dumps(
        {"Fn::Not": [{"Fn::Equals": [{"Ref": "AWS::Region"}, DEFAULT_REPLICA_REGION]}]})
    (policy,) = [p for p in _resources(st, "AWS::IAM::ManagedPolicy").values()
                 if p["ManagedPolicyName"] == f"medistream-{env}-archive-replication-grants"]
    granted = {(a, _flat(r)) for stmt in _statements(policy) for a in stmt["Action"]
               for r in (stmt["Resource"] if isinstance(stmt["Resource"], list) else [stmt["Resource"]])}
    buckets = {f"arn:<AWS::Partition>:s3:::medistream-{b}-{env}-<AWS::AccountId>{tail}"
               for b in ("archive", "archive-replica") for tail in ("", "/*")}
    assert {r for _a, r in granted} == buckets
    assert {a for a, r in granted if "archive-replica" in r} == set(REPLICATION_DESTINATION)
    assert {a for a, r in granted if "archive-replica" not in r} == set(REPLICATION_SOURCE)
    rt = _template(synthesized, replica)
    bucket = _resources(rt, "AWS::S3::Bucket")[replica.get_logical_id(replica.bucket.node.default_child)]
    assert bucket["ObjectLockEnabled"] is True and bucket["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == {
        "Mode": "COMPLIANCE", "Days": ARCHIVE.retention_days}
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    key_id = replica.get_logical_id(replica.key.node.default_child)
    assert sse["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {"Fn::GetAtt": [key_id, "Arn"]}
    (bucket_policy,) = [p for p in _resources(rt, "AWS::S3::BucketPolicy").values()
                        if p["Bucket"] == {"Ref": replica.get_logical_id(replica.bucket.node.default_child)}]
    denied = {s.get("Sid") for s in bucket_policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"}
    assert {"DenyOtherEncryption", "DenyOtherKey"} <= denied
    assert any(s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
               for s in bucket_policy["PolicyDocument"]["Statement"])
    key = _resources(rt, "AWS::KMS::Key")[key_id]
    assert key["EnableKeyRotation"] is True
    users = [s for s in key["KeyPolicy"]["Statement"] if "kms:Encrypt" in s["Action"]]
    (user,) = users
    assert _flat(user["Principal"]["AWS"]).endswith(f":role/medistream-{env}-archive-replication")
    assert "kms:Decrypt" not in user["Action"]
    aliases = [_flat(a["AliasName"]) for a in _resources(rt, "AWS::KMS::Alias").values()]
    assert aliases == [f"alias/medistream-{env}/archive-replica"]


def test_every_bucket_has_its_key_tls_only_versioned_and_private(synthesized: dict[str, Any]) -> None:
    stacks = synthesized["stacks"]
    storage, template = stacks.storage, _template(synthesized, stacks.storage)
    buckets = _resources(template, "AWS::S3::Bucket")
    policies = {storage.resolve(p["Bucket"])["Ref"]: p["PolicyDocument"]["Statement"]
                for p in _resources(template, "AWS::S3::BucketPolicy").values()}
    assert set(storage.buckets) == set(BUCKET_KEYS)
    for role, bucket in storage.buckets.items():
        logical = storage.get_logical_id(bucket.node.default_child)
        props = buckets[logical]
        (sse,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        default = sse["ServerSideEncryptionByDefault"]
        if BUCKET_KEYS[role] is None:
            assert default == {"SSEAlgorithm": "AES256"}, role  # the access-log target: SSE-S3 only
        else:
            assert default["SSEAlgorithm"] == "aws:kms", role
            assert default["KMSMasterKeyID"] == storage.resolve(stacks.keys.keys[BUCKET_KEYS[role]].key_arn), role
            denied = {s.get("Sid") for s in policies[logical] if s["Effect"] == "Deny"}
            assert {"DenyOtherEncryption", "DenyOtherKey"} <= denied, role
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, role
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True}, role
        tls = [s for s in policies[logical] if s["Effect"] == "Deny"
               and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
        assert tls and tls[0]["Principal"] == {"AWS": "*"} and tls[0]["Action"] == "s3:*", role


def _key_policies(synthesized: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    keys = synthesized["stacks"].keys
    resources = _resources(_template(synthesized, keys), "AWS::KMS::Key")
    return {name: resources[keys.get_logical_id(key.node.default_child)]["KeyPolicy"]["Statement"]
            for name, key in keys.keys.items()}


def _roles_with(statements: list[dict[str, Any]], action: str, role_ids: dict[str, str]) -> set[str]:
    named = set()
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        if action in actions and s["Effect"] == "Allow":
            principals = s["Principal"].get("AWS", [])
            for p in principals if isinstance(principals, list) else [principals]:
                named.update(job for job, ref in role_ids.items() if json.dumps(ref) in json.dumps(p))
    return named


def test_no_role_decrypts_a_domain_it_does_not_need(synthesized: dict[str, Any]) -> None:
    stacks = synthesized["stacks"]
    role_ids = {job: stacks.keys.resolve(role.role_arn) for job, role in stacks.identity.roles.items()}
    policies = _key_policies(synthesized)
    assert partner_domains() == ["claims"]
    for domain in key_domains():
        decrypters = _roles_with(policies[domain], "kms:Decrypt", role_ids)
        expected = {"ingest"} | ({"partner_delivery"} if domain in partner_domains() else set())
        assert decrypters == expected, domain
        assert _roles_with(policies[domain], "kms:GenerateDataKey", role_ids) == {"ingest"}, domain
    for name, statements in policies.items():
        for s in statements:  # the account administers; only named roles and the logs service use a key
            if s["Principal"].get("AWS") and "root" in json.dumps(s["Principal"]):
                if s.get("Sid") == "RotationOfThisEnvironmentsOperationalSecrets":  # the one delegation to IAM
                    assert name == "credentials" and "kms:ViaService" in s["Condition"]["StringEquals"]
                    continue
                assert not {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:*"} & set(s["Action"]), name
    rotated = _resources(_template(synthesized, stacks.keys), "AWS::KMS::Key").values()
    assert all(k["EnableKeyRotation"] for k in rotated) and len(rotated) == len(policies)
    for template in synthesized["templates"].values():  # no IAM policy grants KMS use beside the key policies
        for policy in _resources(template, "AWS::IAM::ManagedPolicy").values():
            actions = [a for s in policy["PolicyDocument"]["Statement"]
                       for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])]
            assert not [a for a in actions if a.startswith("kms:") or a == "*"], actions
    assert set(ENCRYPT) | set(DECRYPT) >= {"kms:Decrypt", "kms:GenerateDataKey"}


def test_flink_applications_private_with_snapshots(synthesized: dict[str, Any]) -> None:
    stacks = synthesized["stacks"]
    flink, network = stacks.flink, stacks.network
    apps = _resources(_template(synthesized, flink), "AWS::KinesisAnalyticsV2::Application")
    assert len(apps) == len(FLINK_JOBS)
    private = [flink.resolve(s.subnet_id) for s in network.vpc.isolated_subnets]
    egress = [flink.resolve(s.subnet_id) for s in network.egress_subnets]
    assert len(private) == 3 and len(egress) == 3
    for props in apps.values():
        config = props["ApplicationConfiguration"]
        assert props["RuntimeEnvironment"] == "FLINK-2_2"
        assert config["ApplicationSnapshotConfiguration"] == {"SnapshotsEnabled": True}
        assert config["FlinkApplicationConfiguration"]["CheckpointConfiguration"]["CheckpointingEnabled"] is True
        (vpc,) = config["VpcConfigurations"]
        partner_facing = props["ApplicationName"].startswith("medistream-partner_delivery-")
        assert vpc["SubnetIds"] == (egress if partner_facing else private)  # only partner delivery leaves the VPC
        assert len(vpc["SecurityGroupIds"]) == (2 if partner_facing else 1)
        groups = {g["PropertyGroupId"]: g["PropertyMap"] for g in config["EnvironmentProperties"]["PropertyGroups"]}
        assert groups["runtime"]["deployment"] == "cluster" and groups["kafka"]["security"] == "msk-iam"
        assert groups["iceberg"]["catalog-impl"] == "org.apache.iceberg.aws.glue.GlueCatalog"
        assert "kinesis.analytics.flink.run.options" in groups
        assert all(value != "" for keys in groups.values() for value in keys.values())  # MSF refuses empty values
    net = _template(synthesized, network)
    assert len(_resources(net, "AWS::EC2::NatGateway")) == 3 and len(_resources(net, "AWS::EC2::InternetGateway")) == 1
    assert all(not s.get("MapPublicIpOnLaunch") for s in _resources(net, "AWS::EC2::Subnet").values())
    assert len(_resources(net, "AWS::EC2::FlowLog")) == 1


def test_no_security_group_open_to_the_internet(synthesized: dict[str, Any]) -> None:
    """No ingress from anywhere; the one rule to 0.0.0.0/0 is the partner-facing group's HTTPS out, whose only path is
    the egress firewall (its domain allow-list: test_egress_through_the_firewall_to_the_configs_hosts_only)."""
    network = synthesized["stacks"].network
    rules: list[tuple[str, dict[str, Any]]] = []
    for template in synthesized["templates"].values():
        for logical, props in _resources(template, "AWS::EC2::SecurityGroup").items():
            rules += [("ingress", {**r, "GroupId": logical}) for r in props.get("SecurityGroupIngress", [])]
            rules += [("egress", {**r, "GroupId": logical}) for r in props.get("SecurityGroupEgress", [])]
        for kind, way in (("AWS::EC2::SecurityGroupIngress", "ingress"), ("AWS::EC2::SecurityGroupEgress", "egress")):
            rules += [(way, r) for r in _resources(template, kind).values()]
    assert rules
    open_rules = [(way, r) for way, r in rules if r.get("CidrIp") == "0.0.0.0/0" or r.get("CidrIpv6") == "::/0"]
    partners = network.get_logical_id(network.partners_sg.node.default_child)
    assert [(way, json.dumps(r["GroupId"]), r["IpProtocol"], r["FromPort"], r["ToPort"]) for way, r in open_rules] == [
        ("egress", json.dumps(partners), "tcp", 443, 443)]


def test_names_agree_with_the_production_properties() -> None:
    """Every name conf/environments/production.json spells is the one the prod stacks create."""
    from tools.package import ENTRY_POINTS

    assert set(FLINK_JOBS) == set(ENTRY_POINTS)
    ours = names("prod", "${AWS_ACCOUNT_ID}").runtime_properties()
    compared = []
    for group, keys in production_overlay().items():
        if group.startswith("_") or keys is None:
            continue
        for key, value in keys.items():
            if key in ours.get(group, {}):
                assert ours[group][key] == value, (group, key)
                compared.append(f"{group}.{key}")
    assert {"landing.path", "iceberg.warehouse", "iceberg.namespace", "archive.path", "audit.table",
            "partners.ledger.table", "phi.kms.alias.prefix", "phi.token.secret"} <= set(compared)


def test_application_names_are_the_ones_medistream_jobs_drives() -> None:
    from tools.job_backend_msf import MsfSettings

    for env in ENVIRONMENTS:
        settings = MsfSettings(env, "eu-west-1", "", "", f"medistream-artifacts-{env}-123456789012")
        assert [names(env, "123456789012").application(j) for j in FLINK_JOBS] == [
            settings.application(j) for j in FLINK_JOBS]
    assert names("prod", "123456789012").buckets["artifacts"] == "medistream-artifacts-prod-123456789012"


def test_ledger_keys_are_the_ones_the_code_creates() -> None:
    """The tables' key schemas equal what each module's ensure_table call creates (read from its source)."""
    import ast
    import re

    from connectors.properties import REPO_ROOT
    from infra.aws.config import TABLE_KEYS

    sources = {("partners", "ledger.table"): "connectors/partners/ledger.py", ("audit", "table"): "connectors/audit.py",
               ("operations", "locks.table"): "tools/operation_lease.py",
               ("sftp_pull", "ledger.table"): "connectors/sftp_pull/ledger.py",
               ("ingest_api", "idempotency.table"): "connectors/ingest_api/receipts.py"}
    assert set(sources) == set(TABLE_KEYS)
    for where, path in sources.items():
        text = (REPO_ROOT / path).read_text()
        (call,) = re.findall(r"ensure_table\([^,]+, [^,]+, (\(\"\w+\", \"[SN]\"\)), (\(\"\w+\", \"[SN]\"\))", text)
        assert tuple(ast.literal_eval(part) for part in call) == TABLE_KEYS[where], path


def test_a_finding_fails_the_synth(tmp_path: Path) -> None:
    """An unacknowledged finding (SSH open to the internet) makes synthesis fail, naming rule and resource."""
    from aws_cdk import aws_ec2 as ec2

    app, stacks = infra_tool.build("dev", outdir=str(tmp_path))
    stacks.network.apps_sg.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(22), "planted")
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    lines = infra_tool.findings(tmp_path / "validation-report.json")
    assert "error AwsSolutions-EC23 medistream-dev-network/flink-apps-sg/Resource" in lines
    assert any("HIPAA.Security-EC2RestrictedSSH" in line for line in lines)


def test_a_trail_without_validation_fails_the_synth(tmp_path: Path) -> None:
    """The packs cover the audit stack too: a trail with log file validation off is a finding."""
    app, stacks = infra_tool.build("dev", outdir=str(tmp_path))
    stacks.audit.trail.enable_log_file_validation = False
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    lines = infra_tool.findings(tmp_path / "validation-report.json")
    assert "error HIPAA.Security-CloudTrailLogFileValidationEnabled medistream-dev-audit/trail" in lines


def test_cdk_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`medistream infra check --cli`: the CDK toolkit from npm runs cdk.json's app; cfn-lint and checkov are clean."""
    assert infra_tool.node_bin().joinpath("cdk").exists(), "./medistream installs the CDK toolkit"
    assert infra_tool.main(["check", "--environment", "prod", "--cli", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "prod: synth ok" in out and "0 unacknowledged cdk-nag findings" in out and "prod: cfn-lint clean" in out
    assert "prod: checkov 0 failed checks" in out


def test_alarms_from_the_alert_thresholds_and_the_dashboard(synthesized: dict[str, Any]) -> None:
    """Each alarm reads ops/alerts.yaml's threshold and window; the dashboard is infra/dashboards.py's body."""
    from infra.alert_rules import load_alerts
    from infra.aws.monitoring import IN_CLOUDWATCH, IN_FEED_METRICS, IN_MSK, NOT_IN_CLOUDWATCH
    from infra.dashboards import cloudwatch_dashboard

    monitoring = synthesized["stacks"].monitoring
    template = _template(synthesized, monitoring)
    alerts = load_alerts()["alerts"]
    assert set(IN_CLOUDWATCH) | set(IN_MSK) | set(IN_FEED_METRICS) | set(NOT_IN_CLOUDWATCH) == set(alerts)
    alarms = [a for a in _resources(template, "AWS::CloudWatch::Alarm").values()
              if a["AlarmName"].rsplit("-", 1)[1] in IN_CLOUDWATCH]
    assert len(alarms) == len(IN_CLOUDWATCH) * len(FLINK_JOBS)
    env = synthesized["env"]
    for alarm in alarms:
        application, alert = alarm["AlarmName"].rsplit("-", 1)
        metric_name, key = IN_CLOUDWATCH[alert]
        assert alarm["Threshold"] == alerts[alert][key]
        stat = next(m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m)
        assert stat["Metric"]["MetricName"] == metric_name and stat["Period"] == 60 * int(alerts[alert]["window"][:-1])
        assert stat["Metric"]["Dimensions"] == [{"Name": "Application", "Value": application}]
        assert application.endswith(f"-{env}") and "{{" not in alarm["AlarmDescription"]
        assert alarm["AlarmActions"]
    (dashboard,) = _resources(template, "AWS::CloudWatch::Dashboard").values()
    expected = cloudwatch_dashboard([f"medistream-{j}-{env}" for j in FLINK_JOBS], "REGION")
    parts = dashboard["DashboardBody"]["Fn::Join"][1]
    body = "".join(p if isinstance(p, str) else "REGION" for p in parts)
    assert json.loads(body) == expected
    for topic in _resources(template, "AWS::SNS::Topic").values():
        assert topic["KmsMasterKeyId"] == monitoring.resolve(synthesized["stacks"].keys.keys["logs"].key_arn)


def test_trail_validated_with_data_events_on_the_phi_buckets(synthesized: dict[str, Any]) -> None:
    """The trail: validation on, every region, encrypted with the audit key, into the locked audit bucket,
    S3 data events on exactly the PHI buckets; the audit bucket admits this trail only."""
    from infra.aws.audit import PHI_BUCKETS

    stacks = synthesized["stacks"]
    audit, env = stacks.audit, synthesized["env"]
    (trail,) = _resources(_template(synthesized, audit), "AWS::CloudTrail::Trail").values()
    from aws_cdk import Aws

    n = names(env, Aws.ACCOUNT_ID)
    assert trail["EnableLogFileValidation"] is True and trail["IsMultiRegionTrail"] is True
    assert trail["IncludeGlobalServiceEvents"] is True and trail["IsLogging"] is True
    assert trail["TrailName"] == f"medistream-{env}-trail"
    assert trail["S3BucketName"] == audit.resolve(n.buckets["audit"])  # the storage stack's audit bucket, by name
    audit_bucket = stacks.storage.buckets["audit"].node.default_child
    assert stacks.storage.resolve(audit_bucket.bucket_name) == trail["S3BucketName"]
    assert trail["KMSKeyId"] == audit.resolve(stacks.keys.keys["audit"].key_arn)
    assert "CloudWatchLogsLogGroupArn" in trail
    (selector,) = trail["EventSelectors"]
    assert selector["ReadWriteType"] == "All" and selector["IncludeManagementEvents"] is True
    (data,) = selector["DataResources"]
    assert data["Type"] == "AWS::S3::Object"
    assert data["Values"] == [audit.resolve(f"arn:{Aws.PARTITION}:s3:::{n.buckets[b]}/") for b in PHI_BUCKETS]
    assert len(PHI_BUCKETS) == 3
    assert set(PHI_BUCKETS) == {b for b, k in BUCKET_KEYS.items() if k in ("landing", "warehouse", "archive")}
    storage = stacks.storage
    policies = {storage.resolve(p["Bucket"])["Ref"]: p["PolicyDocument"]["Statement"]
                for p in _resources(_template(synthesized, storage), "AWS::S3::BucketPolicy").values()}
    writes = [s for s in policies[storage.get_logical_id(storage.buckets["audit"].node.default_child)]
              if s.get("Principal") == {"Service": "cloudtrail.amazonaws.com"}]
    assert {s["Sid"] for s in writes} == {"CloudTrailChecksTheBucket", "CloudTrailWritesItsLogFiles"}
    for statement in writes:
        assert f"trail/medistream-{env}-trail" in json.dumps(statement["Condition"]["StringEquals"]["aws:SourceArn"])
    audit_key = _key_policies(synthesized)["audit"]
    trail_statements = [s for s in audit_key if s.get("Principal") == {"Service": "cloudtrail.amazonaws.com"}]
    assert trail_statements and all("aws:SourceArn" in s["Condition"]["StringEquals"] for s in trail_statements)


def test_guard_changes_raise_rules_and_alarms(synthesized: dict[str, Any]) -> None:
    """KMS key-policy, IAM and bucket-policy changes: an EventBridge rule on this environment's resources and a
    metric-filter alarm each, both to the encrypted security topic."""
    from infra.aws.audit import CHANGES, metric_filter_pattern

    stacks, env = synthesized["stacks"], synthesized["env"]
    template = _template(synthesized, stacks.audit)
    rules = _resources(template, "AWS::Events::Rule")
    assert len(rules) == len(CHANGES) == 3
    topic_ref = {"Ref": stacks.audit.get_logical_id(stacks.audit.topic.node.default_child)}
    for rule in rules.values():
        pattern = rule["EventPattern"]
        source = pattern["detail"]["eventSource"][0]
        change = next(c for c in CHANGES if c.source == source)
        assert pattern["detail"]["eventName"] == list(change.calls)
        assert pattern["source"] == [f"aws.{source.split('.')[0]}"]
        assert rule["Targets"][0]["Arn"] == topic_ref
    detail = {r["EventPattern"]["source"][0]: r["EventPattern"]["detail"] for r in rules.values()}
    audit = stacks.audit
    assert detail["aws.kms"]["resources"]["ARN"] == [audit.resolve(k.key_arn) for k in stacks.keys.keys.values()]
    assert detail["aws.iam"]["$or"][0] == {"requestParameters": {"roleName": [{"prefix": f"medistream-{env}"}]}}
    n = names(env, stacks.audit.account)
    assert sorted(json.dumps(b) for b in detail["aws.s3"]["requestParameters"]["bucketName"]) == sorted(
        json.dumps(audit.resolve(b)) for b in n.buckets.values())
    assert {"PutKeyPolicy", "PutBucketPolicy", "PutRolePolicy", "AttachRolePolicy"} <= {
        call for c in CHANGES for call in c.calls}
    filters = {f["FilterPattern"] for f in _resources(template, "AWS::Logs::MetricFilter").values()}
    assert filters == {metric_filter_pattern(c) for c in CHANGES}
    alarms = _resources(template, "AWS::CloudWatch::Alarm")
    assert sorted(a["AlarmName"] for a in alarms.values()) == sorted(f"medistream-{env}-{c.name}" for c in CHANGES)
    assert all(a["AlarmActions"] == [topic_ref] and a["Threshold"] == 1 for a in alarms.values())
    (topic,) = _resources(template, "AWS::SNS::Topic").values()
    assert topic["KmsMasterKeyId"] == stacks.audit.resolve(stacks.keys.keys["logs"].key_arn)


def test_msk_iam_tls_cmk_and_the_topics_of_the_config(synthesized: dict[str, Any]) -> None:
    """MSK: IAM auth only, TLS to clients and between brokers, the streaming key at rest, private subnets; the
    topics are the ones the local run creates (conf + feed contracts); brokers reachable only from our groups."""
    from infra.aws.config import feeds_with, topics

    stacks = synthesized["stacks"]
    streaming, network = stacks.streaming, stacks.network
    template = _template(synthesized, streaming)
    (cluster,) = _resources(template, "AWS::MSK::Cluster").values()
    auth = cluster["ClientAuthentication"]
    assert auth == {"Sasl": {"Iam": {"Enabled": True}}, "Unauthenticated": {"Enabled": False}}
    encryption = cluster["EncryptionInfo"]
    assert encryption["EncryptionInTransit"] == {"ClientBroker": "TLS", "InCluster": True}
    at_rest = encryption["EncryptionAtRest"]["DataVolumeKMSKeyId"]
    assert at_rest == streaming.resolve(stacks.keys.keys["streaming"].key_arn)
    nodes = cluster["BrokerNodeGroupInfo"]
    assert nodes["ClientSubnets"] == [streaming.resolve(s.subnet_id) for s in network.vpc.isolated_subnets]
    assert nodes["ConnectivityInfo"]["PublicAccess"]["Type"] == "DISABLED"
    assert cluster["ClusterName"] == f"medistream-{synthesized['env']}"
    (config,) = _resources(template, "AWS::MSK::Configuration").values()
    assert "auto.create.topics.enable=false" in config["ServerProperties"]
    assert "min.insync.replicas=2" in config["ServerProperties"]
    made = {t["TopicName"]: t for t in _resources(template, "AWS::MSK::Topic").values()}
    assert set(made) == {t.name for t in topics()}
    assert {f"raw.{f}" for f in feeds_with("kafka") + feeds_with("rest")} | {
        "curated.snowflake", "curated.partner.clearwater_health", "medistream.dlq", "medistream.dlq.partner",
        "medistream.pull.cursors"} == set(made)
    assert all(t["ReplicationFactor"] == 3 for t in made.values())
    import base64

    assert base64.b64decode(made["medistream.pull.cursors"]["Configs"]).decode() == "cleanup.policy=compact\n"
    # The brokers' group: ingress on 9098 from security groups only (no CIDR), no egress.
    net = _template(synthesized, network)
    msk_sg = network.get_logical_id(network.msk_sg.node.default_child)
    ingress = [r for r in _resources(net, "AWS::EC2::SecurityGroupIngress").values()
               if r["GroupId"] == {"Fn::GetAtt": [msk_sg, "GroupId"]}]
    assert ingress and all(r["FromPort"] == r["ToPort"] == 9098 and "SourceSecurityGroupId" in r for r in ingress)


def _flat(value: Any) -> str:
    """A template value as text: joins joined, references as <Name>."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        return value["Fn::Join"][0].join(_flat(part) for part in value["Fn::Join"][1])
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::ImportValue" in value:  # another stack's output (a parameter of the network's)
        return f"<import {value['Fn::ImportValue']}>"
    return json.dumps(value)


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**st, "Action": st["Action"] if isinstance(st["Action"], list) else [st["Action"]],
             "Resource": st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]}
            for st in policy["PolicyDocument"]["Statement"]]


def test_sftp_users_one_per_landing_feed_scoped_to_its_prefix(synthesized: dict[str, Any]) -> None:
    """Transfer Family: SFTP only, a VPC endpoint in the private subnets; each landing feed's user is mapped into
    feeds/<feed> of the landing bucket, and its role reaches only that prefix (no delete, no other feed)."""
    from infra.aws.config import feeds_with

    stacks, env = synthesized["stacks"], synthesized["env"]
    doors, network = stacks.doors, stacks.network
    template = _template(synthesized, doors)
    (server,) = _resources(template, "AWS::Transfer::Server").values()
    assert server["Protocols"] == ["SFTP"] and server["EndpointType"] == "VPC"
    assert server["EndpointDetails"]["SubnetIds"] == [doors.resolve(s.subnet_id) for s in network.vpc.isolated_subnets]
    assert server["SecurityPolicyName"].startswith("TransferSecurityPolicy-20")
    assert server["StructuredLogDestinations"] and server["LoggingRole"]
    users = {u["UserName"]: u for u in _resources(template, "AWS::Transfer::User").values()}
    landing = feeds_with("landing")
    assert sorted(users) == landing and len(landing) == 8
    bucket = f"medistream-landing-{env}-<AWS::AccountId>"
    policies = {_flat(p["Roles"][0]): _statements(p)
                for p in _resources(template, "AWS::IAM::ManagedPolicy").values() if p.get("Roles")}
    for feed, user in users.items():
        assert user["HomeDirectoryType"] == "LOGICAL"
        (mapping,) = user["HomeDirectoryMappings"]
        assert mapping["Entry"] == "/"
        assert _flat(mapping["Target"]) == f"/{bucket}/feeds/{feed}"
        role_name = f"medistream-{env}-sftp-{feed.replace('_', '-')}"
        assert _flat(user["Role"]).endswith(f":role/{role_name}")
        statements = policies[role_name]
        objects = [st for st in statements if "s3:PutObject" in st["Action"]]
        assert len(objects) == 1 and [_flat(r) for r in objects[0]["Resource"]] == [
            f"arn:<AWS::Partition>:s3:::{bucket}/feeds/{feed}/*"]
        listing = [st for st in statements if st["Action"] == ["s3:ListBucket"]]
        assert listing[0]["Condition"] == {"StringLike": {"s3:prefix": [f"feeds/{feed}/*", f"feeds/{feed}/"]}}
        actions = {a for st in statements for a in st["Action"]}
        assert not {"s3:DeleteObject", "s3:*", "*"} & actions and all(a.startswith("s3:") for a in actions)
    landing_key = _key_policies(synthesized)["landing"]
    role_ids = {r: stacks.keys.resolve(role.role_arn) for r, role in stacks.identity.roles.items()}
    assert {f"sftp_{f}" for f in landing} <= _roles_with(landing_key, "kms:GenerateDataKey", role_ids)
    for domain in key_domains():  # a sender's role opens no PHI domain
        decrypters = _roles_with(_key_policies(synthesized)[domain], "kms:Decrypt", role_ids)
        assert not {f"sftp_{f}" for f in landing} & decrypters


def test_services_on_fargate_in_private_subnets_with_their_own_roles(synthesized: dict[str, Any]) -> None:
    """Each service: Fargate, no public IP, the private subnets, its own task role, this environment's properties."""
    from infra.aws.config import SERVICES

    stacks, env = synthesized["stacks"], synthesized["env"]
    doors, network = stacks.doors, stacks.network
    template = _template(synthesized, doors)
    services = _resources(template, "AWS::ECS::Service")
    assert len(services) == len(SERVICES) == 4
    from infra.aws.config import PARTNER_FACING

    private = sorted(json.dumps(doors.resolve(s.subnet_id)) for s in network.vpc.isolated_subnets)
    egress = sorted(json.dumps(doors.resolve(s.subnet_id)) for s in network.egress_subnets)
    services_sg, partners_sg = (doors.resolve(g.security_group_id) for g in (network.services_sg, network.partners_sg))
    for props in services.values():
        vpc = props["NetworkConfiguration"]["AwsvpcConfiguration"]
        partner_facing = props["ServiceName"].split("-", 2)[2] in PARTNER_FACING
        assert vpc["AssignPublicIp"] == "DISABLED"
        assert sorted(json.dumps(s) for s in vpc["Subnets"]) == (egress if partner_facing else private)
        assert vpc["SecurityGroups"] == ([services_sg, partners_sg] if partner_facing else [services_sg])
        assert props["LaunchType"] == "FARGATE"
    tasks = {t["Family"]: t for t in _resources(template, "AWS::ECS::TaskDefinition").values()}
    for service, (command, group) in SERVICES.items():
        task = tasks[f"medistream-{env}-{service}"]
        assert _flat(task["TaskRoleArn"]).endswith(f":role/medistream-{env}-{service.replace('_', '-')}")
        assert _flat(task["ExecutionRoleArn"]).endswith(f":role/medistream-{env}-task-execution")
        (container,) = task["ContainerDefinitions"]
        assert container["Command"][0].endswith(f"exec medistream {command}")
        env_vars = {e["Name"]: e["Value"] for e in container["Environment"]}
        doc = _flat(env_vars["MEDISTREAM_PROPERTIES_DOC"])
        assert group in {g["PropertyGroupId"] for g in json.loads(doc)}, service
        assert f"medistream-audit-{env}" in doc and "127.0.0.1" not in doc and "${MEDISTREAM_HOME}" not in doc
        assert "msk-iam" in doc
        assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    api_doc = _flat(tasks[f"medistream-{env}-ingest_api"]["ContainerDefinitions"][0]["Environment"][1]["Value"])
    assert f"medistream-{env}/ingest-api/keys" in api_doc and f"medistream-ingest-idempotency-{env}" in api_doc


def test_secrets_generated_from_contracts_and_config_under_the_credentials_key(synthesized: dict[str, Any]) -> None:
    from infra.aws.credentials import ROTATION, secret_specs

    stacks, env = synthesized["stacks"], synthesized["env"]
    template = _template(synthesized, stacks.credentials)
    secrets = {s["Name"]: s for s in _resources(template, "AWS::SecretsManager::Secret").values()}
    expected = {f"medistream-{env}/" + spec.secret_id.removeprefix("medistream/") for spec in secret_specs()}
    assert set(secrets) == expected
    assert {f"medistream-{env}/partners/clearwater_health/oauth", f"medistream-{env}/phi/token-keys"} <= set(secrets)
    key = stacks.credentials.resolve(stacks.keys.keys["credentials"].key_arn)
    assert all(s["KmsKeyId"] == key and "SecretString" not in s for s in secrets.values())
    assert all(spec.kind in ROTATION for spec in secret_specs())
    role_ids = {r: stacks.keys.resolve(role.role_arn) for r, role in stacks.identity.roles.items()}
    readers = _roles_with(_key_policies(synthesized)["credentials"], "kms:Decrypt", role_ids)
    assert readers == {"ingest", "partner_delivery", "ingest_api", "rest_pull", "sftp_pull", "snowflake_load",
                       "operational_migrate"}


def test_no_wildcard_action_and_wildcard_resources_only_without_resource_permissions(
        synthesized: dict[str, Any]) -> None:
    """Across every stack's IAM policies: no `*` action; a bare `*` resource only for calls that take no resource."""
    from infra.aws.access import ECR_AUTH, VPC_DESCRIBE

    policies = [p for t in synthesized["templates"].values()
                for kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy") for p in _resources(t, kind).values()]
    assert len(policies) > 15
    for policy in policies:
        for st in _statements(policy):
            assert not [a for a in st["Action"] if a == "*" or a.endswith(":*")], st
            if "*" in st["Resource"]:
                assert set(st["Action"]) <= set(VPC_DESCRIBE) | set(ECR_AUTH), st


def test_ingest_api_behind_waf_and_a_private_load_balancer(synthesized: dict[str, Any]) -> None:
    """API Gateway publishes only POST /v1/feeds/{feed}/records, through a VPC link to an internal NLB in the private
    subnets; the web ACL on its stage has AWS's rule groups and a per-IP rate from conf/, and its logs redact keys."""
    from infra.aws.api import MANAGED_RULE_GROUPS, REDACTED_HEADERS, WAF_WINDOW_S
    from infra.aws.config import base_groups

    stacks = synthesized["stacks"]
    doors, network = stacks.doors, stacks.network
    template = _template(synthesized, doors)
    (nlb,) = _resources(template, "AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    assert nlb["Scheme"] == "internal" and nlb["Type"] == "network"
    assert sorted(map(json.dumps, nlb["Subnets"])) == sorted(
        json.dumps(doors.resolve(s.subnet_id)) for s in network.vpc.isolated_subnets)
    methods = list(_resources(template, "AWS::ApiGateway::Method").values())
    assert [m["HttpMethod"] for m in methods] == ["POST"]
    (method,) = methods
    assert method["Integration"]["ConnectionType"] == "VPC_LINK" and method["Integration"]["Type"] == "HTTP_PROXY"
    assert _flat(method["Integration"]["Uri"]) == "https://<IngestApiBackendName>/v1/feeds/{feed}/records"
    # TLS from the VPC link to the load balancer: one TLS listener, the deploy's certificate, TLS 1.2+ only; access
    # logs into the access-log bucket, whose policy admits the log delivery service for this account there.
    (listener,) = _resources(template, "AWS::ElasticLoadBalancingV2::Listener").values()
    assert (listener["Protocol"], listener["Port"]) == ("TLS", 443)
    assert listener["Certificates"] == [{"CertificateArn": {"Ref": "IngestApiCertificateArn"}}]
    assert listener["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    attributes = {a["Key"]: a["Value"] for a in nlb["LoadBalancerAttributes"]}
    assert attributes["access_logs.s3.enabled"] == "true" and attributes["access_logs.s3.prefix"] == "nlb"
    assert _flat(attributes["access_logs.s3.bucket"]) == f"medistream-access-logs-{synthesized['env']}-<AWS::AccountId>"
    storage = _template(synthesized, stacks.storage)
    logs_bucket = stacks.storage.get_logical_id(stacks.storage.access_logs.node.default_child)
    (policy,) = [p for p in _resources(storage, "AWS::S3::BucketPolicy").values()
                 if p["Bucket"] == {"Ref": logs_bucket}]
    delivery = [st for st in policy["PolicyDocument"]["Statement"]
                if st.get("Principal") == {"Service": "delivery.logs.amazonaws.com"}]
    assert sorted(st["Action"] for st in delivery) == ["s3:GetBucketAcl", "s3:PutObject"]
    assert all(st["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"} for st in delivery)
    paths = {r["PathPart"] for r in _resources(template, "AWS::ApiGateway::Resource").values()}
    assert paths == {"v1", "feeds", "{feed}", "records"}
    (stage,) = _resources(template, "AWS::ApiGateway::Stage").values()
    assert stage["TracingEnabled"] is True and "DestinationArn" in stage["AccessLogSetting"]
    (acl,) = _resources(template, "AWS::WAFv2::WebACL").values()
    assert acl["Scope"] == "REGIONAL"
    managed = [r["Statement"]["ManagedRuleGroupStatement"]["Name"] for r in acl["Rules"]
               if "ManagedRuleGroupStatement" in r["Statement"]]
    assert managed == list(MANAGED_RULE_GROUPS)
    (rate,) = [r["Statement"]["RateBasedStatement"] for r in acl["Rules"] if "RateBasedStatement" in r["Statement"]]
    assert rate["Limit"] == int(float(base_groups()["ingest_api"]["rate"]) * WAF_WINDOW_S)
    assert rate["AggregateKeyType"] == "IP"
    (association,) = _resources(template, "AWS::WAFv2::WebACLAssociation").values()
    stage_id = next(k for k, v in template["Resources"].items() if v["Type"] == "AWS::ApiGateway::Stage")
    assert stage_id in json.dumps(association["ResourceArn"])
    (waf_logging,) = _resources(template, "AWS::WAFv2::LoggingConfiguration").values()
    assert [f["SingleHeader"]["Name"] for f in waf_logging["RedactedFields"]] == list(REDACTED_HEADERS)
    groups = {k: v["Properties"]["LogGroupName"] for k, v in template["Resources"].items()
              if v["Type"] == "AWS::Logs::LogGroup"}
    target = _flat(waf_logging["LogDestinationConfigs"][0]).rsplit(":", 1)[1].strip("<>")
    assert groups[target] == f"aws-waf-logs-medistream-{synthesized['env']}"
    assert all(_flat(v["Properties"]["KmsKeyId"]) for v in template["Resources"].values()
               if v["Type"] == "AWS::Logs::LogGroup")


def test_every_table_in_a_locked_backup_vault(synthesized: dict[str, Any]) -> None:
    """AWS Backup: every DynamoDB table selected; daily copies 35 days, monthly for the archive's retention; the
    vault under the ledgers key, locked (compliance after the cooling-off) and refusing recovery-point deletion."""
    from infra.aws.backup import DAILY_DAYS, LOCK_COOLING_OFF_DAYS

    stacks = synthesized["stacks"]
    storage = stacks.storage
    template = _template(synthesized, storage)
    (plan,) = _resources(template, "AWS::Backup::BackupPlan").values()
    rules = {r["RuleName"]: r for r in plan["BackupPlan"]["BackupPlanRule"]}
    assert rules["daily"]["Lifecycle"] == {"DeleteAfterDays": DAILY_DAYS}
    assert rules["monthly"]["Lifecycle"] == {"DeleteAfterDays": ARCHIVE.retention_days}
    (vault,) = _resources(template, "AWS::Backup::BackupVault").values()
    assert vault["EncryptionKeyArn"] == storage.resolve(stacks.keys.keys["ledgers"].key_arn)
    assert vault["LockConfiguration"] == {"MinRetentionDays": DAILY_DAYS, "MaxRetentionDays": ARCHIVE.retention_days,
                                          "ChangeableForDays": LOCK_COOLING_OFF_DAYS}
    denied = vault["AccessPolicy"]["Statement"]
    assert any(s["Effect"] == "Deny" and "backup:DeleteRecoveryPoint" in s["Action"] for s in denied)
    (selection,) = _resources(template, "AWS::Backup::BackupSelection").values()
    selected = selection["BackupSelection"]["Resources"]
    assert sorted(map(json.dumps, selected)) == sorted(
        json.dumps(storage.resolve(t.table_arn)) for t in storage.tables.values())
    assert len(selected) == 5
    assert _flat(selection["BackupSelection"]["IamRoleArn"]).endswith(f"role/medistream-{synthesized['env']}-backup")
    role_ids = {r: stacks.keys.resolve(role.role_arn) for r, role in stacks.identity.roles.items()}
    assert "backup" in _roles_with(_key_policies(synthesized)["ledgers"], "kms:GenerateDataKey", role_ids)


def test_consumer_lag_alarms_from_msk_metrics(synthesized: dict[str, Any]) -> None:
    """SnowflakeLag and ConsumerLagGrowing read MSK's lag of each of our consumer groups on each topic it reads,
    with ops/alerts.yaml's thresholds."""
    from infra.alert_rules import load_alerts
    from infra.aws.config import topics
    from infra.aws.monitoring import consumers

    env = synthesized["env"]
    alerts = load_alerts()["alerts"]
    groups = consumers()
    assert groups["medistream-snowflake-load"] == ["curated.snowflake"]
    assert groups["medistream-partner-delivery"] == ["curated.partner.clearwater_health"]
    assert groups["medistream-ingest"] == [t.name for t in topics() if t.name.startswith("raw.")]
    alarms = {a["AlarmName"]: a for a in _resources(_template(synthesized, synthesized["stacks"].monitoring),
                                                        "AWS::CloudWatch::Alarm").values()}
    snowflake = alarms[f"medistream-{env}-SnowflakeLag"]
    assert snowflake["Threshold"] == alerts["SnowflakeLag"]["max_messages"]
    assert snowflake["MetricName"] == "SumOffsetLag"
    assert snowflake["EvaluationPeriods"] == int(alerts["SnowflakeLag"]["for"][:-1])
    assert {d["Name"]: d["Value"] for d in snowflake["Dimensions"]} == {
        "Cluster Name": f"medistream-{env}", "Consumer Group": "medistream-snowflake-load",
        "Topic": "curated.snowflake"}
    growing = {n: a for n, a in alarms.items() if "-ConsumerLagGrowing-" in n}
    assert len(growing) == sum(len(t) for t in groups.values())
    for alarm in growing.values():
        (expression,) = [m["Expression"] for m in alarm["Metrics"] if "Expression" in m]
        assert expression == f"IF(m > {alerts['ConsumerLagGrowing']['min_lag']} AND DIFF(m) > 0, 1, 0)"
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["AlarmActions"]


@pytest.mark.parametrize("synthesized", ["dev"], indirect=True)  # one rehearsal: each starts a local server
def test_deploy_rehearsal_on_the_local_api(synthesized: dict[str, Any], tmp_path: Path) -> None:
    """The long-lived stacks deploy to a private local AWS API server and what it applies holds; a bucket planted
    under the wrong key fails the rehearsal; what the server skips is exactly the known list (README)."""
    import shutil

    from infra.aws.rehearsal import rehearse

    templates = tmp_path / "templates"
    shutil.copytree(synthesized["out"], templates)
    storage_file = templates / "medistream-dev-storage.template.json"
    storage = json.loads(storage_file.read_text())
    stacks = synthesized["stacks"]
    landing = stacks.storage.get_logical_id(stacks.storage.buckets["landing"].node.default_child)
    default = storage["Resources"][landing]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"]
    default["KMSMasterKeyID"] = stacks.storage.resolve(stacks.keys.keys["warehouse"].key_arn)  # the planted mistake
    storage_file.write_text(json.dumps(storage))
    status, probes = rehearse(templates, "dev", tmp_path / "server.log")
    assert set(status.values()) == {"CREATE_COMPLETE"}
    verdicts = {p.name: p.verdict for p in probes}
    assert [name for name, v in verdicts.items() if v == "fails"] == ["landing: SSE-KMS with the landing key"]
    holds = {name for name, v in verdicts.items() if v == "holds"}
    assert {"every CMK exists under its alias", "every CMK rotates", "every role exists", "access_logs: SSE-S3",
            "archive: SSE-KMS with the archive key", "audit: SSE-KMS with the audit key"} <= holds
    assert sum("deletion protection" in name for name in holds) == 5
    assert {name for name, v in verdicts.items() if v == "not applied"} == {
        "archive versioned", "landing bucket policy (TLS only, SSE-KMS with its key)",
        "an SSE-S3 upload to landing is refused", "archive Object Lock, compliance, 7 years", "public access blocked",
        "archive replicates to the replica bucket",
        "tables under the ledgers CMK", "tables with point-in-time recovery", "secrets exist under the credentials CMK",
        "backup plan and locked vault"}


def test_rds_ca_bundle_is_awss_pinned_bundle_and_the_zip_takes_it_from_the_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed RDS CA bundle is the pinned digest of AWS's published bundle: 108 self-signed Amazon RDS CAs, none
    expired; `medistream package` takes it from the commit into the zip where the flink stack's OperationalSslRootCert
    points by default, and refuses a commit that names it without it or with other bytes, naming the file."""
    import datetime
    import hashlib
    import subprocess

    from cryptography import x509

    from connectors.properties import REPO_ROOT
    from infra.aws.flink import RDS_CA_BUNDLE
    from tools import package

    data = (REPO_ROOT / package.RDS_CA_BUNDLE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == package.RDS_CA_BUNDLE_SHA256
    certificates = x509.load_pem_x509_certificates(data)
    assert len(certificates) == 108
    now = datetime.datetime.now(datetime.UTC)
    for cert in certificates:
        subject = cert.subject.rfc4514_string()
        assert "Amazon RDS" in subject and "Amazon Web Services" in subject, subject
        assert cert.issuer == cert.subject and cert.not_valid_after_utc > now, subject
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca, subject
    assert package.RDS_CA_ENTRY == RDS_CA_BUNDLE
    assert package.rds_ca_bundle("HEAD") == data
    # A commit from before the bundle names none: packaged as it was (an older release built for an upgrade).
    assert package.rds_ca_bundle(package.git("rev-list", "--max-parents=0", "HEAD").decode().split()[0]) is None

    def commit(repo: Path) -> None:
        for argv in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t"]):
            subprocess.run(["git", *argv], cwd=repo, check=True, capture_output=True)

    missing = tmp_path / "missing"  # a commit whose flink stack points at the bundle, without it
    (missing / "infra/aws").mkdir(parents=True)
    (missing / "infra/aws/flink.py").write_text(f"RDS_CA_BUNDLE = {RDS_CA_BUNDLE!r}\n")
    commit(missing)
    monkeypatch.setattr(package, "REPO_ROOT", missing)
    with pytest.raises(package.PackageError, match=r"infra/aws/certs/rds-global-bundle.pem is not in commit"):
        package.rds_ca_bundle("HEAD")
    tampered = tmp_path / "repo"  # a commit whose bundle differs by one byte
    (tampered / "infra/aws/certs").mkdir(parents=True)
    (tampered / package.RDS_CA_BUNDLE).write_bytes(data.replace(b"MII", b"MIJ", 1))
    commit(tampered)
    monkeypatch.setattr(package, "REPO_ROOT", tampered)
    with pytest.raises(package.PackageError, match="not the pinned"):
        package.rds_ca_bundle("HEAD")


def test_cost_doc_is_the_models_output() -> None:
    """docs/cost.md holds exactly the tables infra/aws/cost_model.py computes from bench/results."""
    from connectors.properties import REPO_ROOT
    from infra.aws.cost_model import measured, monthly, report

    m = measured()
    assert m.ingest_per_cpu_s[4] > m.ingest_per_cpu_s[12] > 100
    assert report(m) in (REPO_ROOT / "docs" / "cost.md").read_text()
    low, high = sum(monthly(25_000, 4, m).values()), sum(monthly(150_000, 12, m).values())
    assert 0 < low < high


def test_services_properties_load_in_the_services_own_config_loaders() -> None:
    """What each ECS task is handed passes its own loader, with MSK IAM auth and this environment's names; the
    Snowflake loader runs Snowpipe Streaming against the deploy's account, user and role, its key by the
    environment's secret name, with no emulator path (infra/aws/service_overlay.json)."""
    import importlib

    properties = infra_tool.service_properties_for(names("prod", "123456789012"))
    values = {"AWS_ACCOUNT_ID": "123456789012", "AWS_REGION": "eu-west-1", "MSK_BOOTSTRAP_SERVERS": "b-1.msk:9098",
              "SNOWFLAKE_ACCOUNT": "myorg-medistream", "SNOWFLAKE_USER": "MEDISTREAM_LOADER",
              "SNOWFLAKE_ROLE": "MEDISTREAM_LOAD"}
    loaders = {"ingest_api": ("jobs.ingest_api", "load_api_config"),
               "rest_pull": ("jobs.rest_pull", "load_pull_config"), "sftp_pull": ("jobs.sftp_pull", "load_sftp_config"),
               "snowflake_load": ("jobs.snowflake_load", "load_snowflake_config")}
    configs = {}
    for service, (module, loader) in loaders.items():
        groups = {str(g["PropertyGroupId"]): g["PropertyMap"] for g in properties(service, values)}
        configs[service] = getattr(importlib.import_module(module), loader)(groups)
        assert groups["kafka"]["bootstrap.servers"] == "b-1.msk:9098" and groups["kafka"]["security"] == "msk-iam"
        text = json.dumps(groups)
        assert "127.0.0.1" not in text and "${" not in text and "emulator" not in text.replace('"mode"', ""), service
    api = {str(g["PropertyGroupId"]): g["PropertyMap"] for g in properties("ingest_api", values)}["ingest_api"]
    assert api["keys.secret"] == "medistream-prod/ingest-api/keys"
    assert api["idempotency.table"] == "medistream-ingest-idempotency-prod"
    loader = configs["snowflake_load"].snowflake
    assert loader.mode == "snowpipe" and loader.emulator_path == "" and loader.snowpipe is not None
    assert loader.snowpipe.url == "https://myorg-medistream.snowflakecomputing.com"
    assert (loader.snowpipe.account, loader.snowpipe.user, loader.snowpipe.role) == (
        "myorg-medistream", "MEDISTREAM_LOADER", "MEDISTREAM_LOAD")
    assert loader.snowpipe.private_key_secret == "medistream-prod/snowflake/private-key"
    assert loader.snowpipe.secrets_region == "eu-west-1" and loader.snowpipe.secrets_endpoint == ""
    sftp = configs["sftp_pull"]
    assert sftp.destinations.quarantine_bucket == "medistream-landing-prod-123456789012"
    with pytest.raises(ValueError, match=r"snowflake\.user: no deploy-time value for \$\{SNOWFLAKE_USER\}"):
        properties("snowflake_load", {k: v for k, v in values.items() if k != "SNOWFLAKE_USER"})


def test_pulled_feeds_of_the_service_overlay_reach_secrets_and_the_egress_allow_list(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A pulled feed onboarded in service_overlay.json gets its secret in the credentials stack and its hosts in the
    egress firewall's allow-list (HTTPS) or the SFTP host list (port 22); the partner contracts' hosts are there."""
    from infra.aws import config
    from infra.aws.credentials import secret_specs

    values = {"SNOWFLAKE_ACCOUNT": "myorg-medistream"}
    assert config.egress_domains(values) == ["api.clearwater-health.example", "auth.clearwater-health.example",
                                             "myorg-medistream.snowflakecomputing.com"]
    overlay = config.service_overlay()
    overlay["rest_pull"] = {"feeds": "insurer_b_payments", "insurer_b_payments.url": "https://api.insurer-b.example/v1/p",
                            "insurer_b_payments.secret": "medistream/feeds/insurer_b_payments"}
    overlay["sftp_pull"] = {"feeds": "hospital_a_claims", "hospital_a_claims.host": "sftp.hospital-a.example",
                            "hospital_a_claims.dir": "/out", "hospital_a_claims.host.key": "ssh-ed25519 AAAA",
                            "hospital_a_claims.secret": "medistream/feeds/hospital_a_claims"}
    path = tmp_path / "service_overlay.json"
    path.write_text(json.dumps(overlay))
    monkeypatch.setattr(config, "SERVICE_OVERLAY", path)
    assert "api.insurer-b.example" in config.egress_domains(values)
    assert config.sftp_hosts() == ["sftp.hospital-a.example:22"]
    feeds = {s.secret_id for s in secret_specs() if s.kind == "feed"}
    assert feeds == {"medistream/feeds/insurer_b_payments", "medistream/feeds/hospital_a_claims"}
    overlay["rest_pull"]["insurer_b_payments.url"] = "http://api.insurer-b.example/v1/p"
    path.write_text(json.dumps(overlay))
    with pytest.raises(ValueError, match="an https URL"):
        config.egress_domains(values)


def test_only_partner_facing_parts_leave_the_vpc_and_only_through_the_firewall(synthesized: dict[str, Any]) -> None:
    """Partner delivery, the pullers and the Snowflake loader run in the egress subnets, out through the egress
    firewall (HTTPS) or to the partner-sftp prefix list (22) only; nothing else is placed in the egress, NAT or
    firewall subnets (the NAT subnets hold only the NAT gateways, the firewall subnets only the firewalls)."""
    from infra.aws.config import PARTNER_FACING

    stacks = synthesized["stacks"]
    network = stacks.network
    net = _template(synthesized, network)
    partners_sg = network.get_logical_id(network.partners_sg.node.default_child)
    (sg,) = [p for k, p in _resources(net, "AWS::EC2::SecurityGroup").items() if k == partners_sg]
    own = {"Fn::GetAtt": [partners_sg, "GroupId"]}
    egress = sg.get("SecurityGroupEgress", []) + [r for r in _resources(net, "AWS::EC2::SecurityGroupEgress").values()
                                                  if r["GroupId"] == own]
    sftp_list = network.get_logical_id(network.partner_sftp_list)
    assert sorted((r["IpProtocol"], r["FromPort"], json.dumps(r.get("DestinationPrefixListId", r.get("CidrIp"))))
                  for r in egress) == sorted([("tcp", 443, json.dumps("0.0.0.0/0")),
                                              ("tcp", 22, json.dumps({"Fn::GetAtt": [sftp_list, "PrefixListId"]}))])
    assert "SecurityGroupIngress" not in sg and not [r for r in _resources(net, "AWS::EC2::SecurityGroupIngress")
                                                     .values() if r["GroupId"] == own]
    nat_subnets = {network.get_logical_id(s.node.default_child) for s in network.vpc.public_subnets}
    egress_subnets = {network.get_logical_id(s.node.default_child) for s in network.egress_subnets}
    firewall_subnets = {network.get_logical_id(s.node.default_child) for s in network.firewall.subnets}
    for logical, gateway in _resources(net, "AWS::EC2::NatGateway").items():
        assert gateway["SubnetId"]["Ref"] in nat_subnets, logical
    for logical, firewall in _resources(net, "AWS::NetworkFirewall::Firewall").items():
        assert {m["SubnetId"]["Ref"] for m in firewall["SubnetMappings"]} <= firewall_subnets, logical
    placed: dict[str, set[str]] = {}  # subnet logical id -> the users outside the network stack
    for stack_name, template in synthesized["templates"].items():
        if stack_name == network.stack_name:
            continue
        for logical, resource in template["Resources"].items():
            text = json.dumps(resource.get("Properties", {}))
            for subnet in nat_subnets | egress_subnets | firewall_subnets:
                if subnet in text:
                    placed.setdefault(subnet, set()).add(f"{resource['Type']}:{logical}")
    assert not [s for s in nat_subnets | firewall_subnets if s in placed]
    users = {u.rsplit(":", 1)[0] for s in egress_subnets for u in placed.get(s, ())}
    assert users == {"AWS::KinesisAnalyticsV2::Application", "AWS::ECS::Service"}
    services = _resources(_template(synthesized, stacks.doors), "AWS::ECS::Service")
    in_egress = sorted(p["ServiceName"].split("-", 2)[2] for p in services.values()
                       if any(s in json.dumps(p) for s in egress_subnets))
    assert in_egress == sorted(set(PARTNER_FACING) - {"partner_delivery"})
    assert "snowflake_load" in in_egress


def test_egress_through_the_firewall_to_the_configs_hosts_only(synthesized: dict[str, Any]) -> None:
    """Each egress subnet's default route is its zone's firewall endpoint, the firewall subnet's is its zone's NAT
    gateway, the NAT subnet routes the egress subnet back through the same endpoint; the policy drops established
    flows that no rule group passed; HTTPS/HTTP pass to config.egress_domains only, SSH to the partner-sftp list."""
    from infra.aws.config import egress_domains
    from infra.aws.egress import sftp_rule

    network = synthesized["stacks"].network
    net = _template(synthesized, network)
    routes = list(_resources(net, "AWS::EC2::Route").values())
    firewalls = {network.get_logical_id(f): f for f in network.firewall.firewalls}
    assert len(firewalls) == 3

    def endpoint_of(route: dict[str, Any]) -> str:
        return route["VpcEndpointId"]["Fn::Select"][1]["Fn::Split"][1]["Fn::Select"][1]["Fn::GetAtt"][0]

    for i, (egress, nat, fw_subnet) in enumerate(zip(network.egress_subnets, network.vpc.public_subnets,
                                                     network.firewall.subnets, strict=True)):
        firewall = network.get_logical_id(network.firewall.firewalls[i])
        table = network.resolve(egress.route_table.route_table_id)
        (default,) = [r for r in routes if r["RouteTableId"] == table and r.get("DestinationCidrBlock") == "0.0.0.0/0"]
        assert "NatGatewayId" not in default and endpoint_of(default) == firewall
        (to_nat,) = [r for r in routes if r["RouteTableId"] == network.resolve(fw_subnet.route_table.route_table_id)]
        assert to_nat["NatGatewayId"] == network.resolve(nat.node.find_child("NATGateway").ref)
        (back,) = [r for r in routes if r["RouteTableId"] == network.resolve(nat.route_table.route_table_id)
                   and r.get("DestinationCidrBlock") == egress.ipv4_cidr_block]
        assert endpoint_of(back) == firewall
        props = _resources(net, "AWS::NetworkFirewall::Firewall")[firewall]
        assert props["DeleteProtection"] is True and props["SubnetChangeProtection"] is True
    (policy,) = _resources(net, "AWS::NetworkFirewall::FirewallPolicy").values()
    doc = policy["FirewallPolicy"]
    assert doc["StatefulEngineOptions"]["RuleOrder"] == "STRICT_ORDER"
    assert doc["StatefulDefaultActions"] == ["aws:drop_established", "aws:alert_established"]
    assert doc["StatelessDefaultActions"] == ["aws:forward_to_sfe"]
    groups = _resources(net, "AWS::NetworkFirewall::RuleGroup")
    assert {r["ResourceArn"]["Fn::GetAtt"][0] for r in doc["StatefulRuleGroupReferences"]} == set(groups)
    domains = groups[network.get_logical_id(network.firewall.domains)]["RuleGroup"]["RulesSource"]["RulesSourceList"]
    assert domains["GeneratedRulesType"] == "ALLOWLIST" and set(domains["TargetTypes"]) == {"TLS_SNI", "HTTP_HOST"}
    expected = egress_domains({"SNOWFLAKE_ACCOUNT": "${SnowflakeAccount}"})
    assert sorted(_flat(t).replace("<SnowflakeAccount>", "${SnowflakeAccount}") for t in domains["Targets"]) == expected
    assert {"api.clearwater-health.example", "auth.clearwater-health.example"} <= set(expected)
    sftp = groups[network.get_logical_id(network.firewall.sftp)]["RuleGroup"]
    assert sftp["RulesSource"]["RulesString"] == sftp_rule()
    assert sftp["ReferenceSets"]["IPSetReferences"]["PARTNER_SFTP"]["ReferenceArn"] == {
        "Fn::GetAtt": [network.get_logical_id(network.partner_sftp_list), "Arn"]}
    logging = _resources(net, "AWS::NetworkFirewall::LoggingConfiguration").values()
    assert len(logging) == 3 and all({c["LogType"] for c in lc["LoggingConfiguration"]["LogDestinationConfigs"]}
                                     == {"ALERT", "FLOW"} for lc in logging)


def test_topic_grants_name_exact_topics_of_the_config(synthesized: dict[str, Any]) -> None:
    """Every kafka-cluster topic ARN in any policy names one topic of config.topics() exactly (only the cluster's
    UUID is a wildcard); the ingest job reads the raw topics and writes the curated and dead-letter ones."""
    from infra.aws.config import topics

    names_ = {t.name for t in topics()}
    by_role: dict[str, dict[str, set[str]]] = {}
    for template in synthesized["templates"].values():
        for policy in _resources(template, "AWS::IAM::ManagedPolicy").values():
            role = policy["ManagedPolicyName"].removesuffix("-grants")
            for st in _statements(policy):
                for arn in map(_flat, st["Resource"]):
                    if ":topic/" in arn:
                        prefix, topic = arn.rsplit("/", 1)
                        assert topic in names_ and prefix.endswith(f"medistream-{synthesized['env']}/*"), arn
                        for action in st["Action"]:
                            by_role.setdefault(role, {}).setdefault(action, set()).add(topic)
    ingest = by_role[f"medistream-{synthesized['env']}-ingest"]
    assert ingest["kafka-cluster:ReadData"] == {t for t in names_ if t.startswith("raw.")}
    assert ingest["kafka-cluster:WriteData"] == {"medistream.dlq", "curated.snowflake",
                                                 "curated.partner.clearwater_health"}
    delivery = by_role[f"medistream-{synthesized['env']}-partner-delivery"]
    assert delivery["kafka-cluster:ReadData"] == {"curated.partner.clearwater_health"}
    assert delivery["kafka-cluster:WriteData"] == {"medistream.dlq.partner"}


def test_feed_silent_per_contract_feed_from_where_it_arrives(synthesized: dict[str, Any]) -> None:
    """FeedSilent for every feed of the contracts, over its contract's interval: a file feed's PutRequests on its
    landing prefix (a request-metrics filter of the landing bucket), a Kafka/REST feed's messages into its raw topic
    summed over the brokers; missing data is silence."""
    from infra.alert_rules import feed_intervals, load_alerts
    from infra.aws.config import feed_contracts, feeds_with
    from infra.aws.grants import landing_prefix

    stacks, env = synthesized["stacks"], synthesized["env"]
    doc = load_alerts()
    intervals = feed_intervals(feed_contracts(), doc["defaults"]["feed_expected_interval_s"])
    assert len(intervals) == 13 and intervals["hospital_a_claims"] == 900
    alarms = {a["AlarmName"].removeprefix(f"medistream-{env}-FeedSilent-"): a
              for a in _resources(_template(synthesized, stacks.monitoring), "AWS::CloudWatch::Alarm").values()
              if "-FeedSilent-" in a["AlarmName"]}
    assert set(alarms) == set(intervals)
    storage = stacks.storage
    landing = _resources(_template(synthesized, storage), "AWS::S3::Bucket")[
        storage.get_logical_id(storage.buckets["landing"].node.default_child)]
    filters = {m["Id"]: m["Prefix"] for m in landing["MetricsConfigurations"]}
    for feed, alarm in alarms.items():
        assert alarm["ComparisonOperator"] == "LessThanThreshold" and alarm["Threshold"] == 1
        assert alarm["TreatMissingData"] == "breaching" and alarm["AlarmActions"]
        if feed in feeds_with("landing"):
            assert alarm["MetricName"] == "PutRequests" and alarm["Period"] == 60 * -(-intervals[feed] // 60)
            dims = {d["Name"]: _flat(d["Value"]) for d in alarm["Dimensions"]}
            assert filters[dims["FilterId"]] == f"{landing_prefix()}{feed}/"
            assert dims["BucketName"] == f"medistream-landing-{env}-<AWS::AccountId>"
        else:
            stats = [m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m]
            assert len(stats) == 3 and {d["Value"] for s in stats for d in s["Metric"]["Dimensions"]
                                        if d["Name"] == "Topic"} == {f"raw.{feed}"}
            assert all(s["Metric"]["MetricName"] == "MessagesInPerSec" for s in stats)
    assert len(filters) == len(feeds_with("landing"))


def _operational(synthesized: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    stack = synthesized["stacks"].operational
    return stack, _template(synthesized, stack)


def test_operational_store_encrypted_with_its_key_private_tls_and_iam_auth(synthesized: dict[str, Any]) -> None:
    """Aurora PostgreSQL: the `operational` CMK (storage and Performance Insights), in the isolated subnets, no
    public instance, TLS forced, IAM database auth, deletion protection, 35 days of PITR, the postgresql log
    exported to a log group under the logs key, and the cluster in a plan into the locked vault."""
    from infra.aws.backup import vault_name

    stacks, env = synthesized["stacks"], synthesized["env"]
    stack, template = _operational(synthesized)
    (cluster,) = _resources(template, "AWS::RDS::DBCluster").values()
    key = stack.resolve(stacks.keys.keys["operational"].key_arn)
    assert cluster["StorageEncrypted"] is True and cluster["KmsKeyId"] == key
    assert cluster["Engine"] == "aurora-postgresql" and cluster["EngineVersion"].startswith("16.")
    assert cluster["EnableIAMDatabaseAuthentication"] is True and cluster["DeletionProtection"] is True
    assert cluster["BackupRetentionPeriod"] == 35 and cluster["Port"] == 5432
    assert cluster["EnableCloudwatchLogsExports"] == ["postgresql"]
    assert cluster["DBClusterIdentifier"] == f"medistream-{env}-operational"
    (subnets,) = _resources(template, "AWS::RDS::DBSubnetGroup").values()
    assert sorted(map(json.dumps, subnets["SubnetIds"])) == sorted(
        json.dumps(stack.resolve(s.subnet_id)) for s in stacks.network.vpc.isolated_subnets)
    (parameters,) = _resources(template, "AWS::RDS::DBClusterParameterGroup").values()
    assert parameters["Parameters"]["rds.force_ssl"] == "1"
    assert "pgaudit" in parameters["Parameters"]["shared_preload_libraries"]
    instances = _resources(template, "AWS::RDS::DBInstance").values()
    assert len(instances) == 2
    for instance in instances:
        assert instance["PubliclyAccessible"] is False and instance["DBInstanceClass"] == "db.serverless"
        assert instance["PerformanceInsightsKMSKeyId"] == key and instance["MonitoringInterval"] == 60
    (group,) = _resources(template, "AWS::Logs::LogGroup").values()
    assert group["LogGroupName"] == f"/aws/rds/cluster/medistream-{env}-operational/postgresql"
    assert group["KmsKeyId"] == stack.resolve(stacks.keys.keys["logs"].key_arn)
    (selection,) = _resources(template, "AWS::Backup::BackupSelection").values()
    cluster_id = stack.get_logical_id(stack.cluster.node.default_child)
    assert cluster_id in json.dumps(selection["BackupSelection"]["Resources"])
    (plan,) = _resources(template, "AWS::Backup::BackupPlan").values()
    assert {r["TargetBackupVault"] for r in plan["BackupPlan"]["BackupPlanRule"]} == {vault_name(stack.names)}
    # The operational key's policy names AWS Backup's role alone (RDS uses it through grants for its resources).
    role_ids = {r: stacks.keys.resolve(role.role_arn) for r, role in stacks.identity.roles.items()}
    policy = _key_policies(synthesized)["operational"]
    assert _roles_with(policy, "kms:Decrypt", role_ids) == _roles_with(policy, "kms:Encrypt", role_ids) == {"backup"}


def test_operational_store_reached_on_5432_from_the_applications_rotation_and_migration_only(
        synthesized: dict[str, Any]) -> None:
    stacks = synthesized["stacks"]
    network = stacks.network
    stack, template = _operational(synthesized)
    (cluster,) = _resources(template, "AWS::RDS::DBCluster").values()
    ops_sg = network.operational_sg
    assert cluster["VpcSecurityGroupIds"] == [stack.resolve(ops_sg.security_group_id)]
    net = _template(synthesized, network)
    ops_id, apps_id, rotation_id, migrate_id = (
        network.get_logical_id(g.node.default_child)
        for g in (network.operational_sg, network.apps_sg, network.rotation_sg, network.migrate_sg))
    ingress = [r for r in _resources(net, "AWS::EC2::SecurityGroupIngress").values()
               if json.dumps(r["GroupId"]).find(ops_id) >= 0]
    ingress += _resources(net, "AWS::EC2::SecurityGroup")[ops_id].get("SecurityGroupIngress", [])
    assert sorted(r["SourceSecurityGroupId"]["Fn::GetAtt"][0] for r in ingress) == sorted(
        [apps_id, rotation_id, migrate_id])
    assert all(r["FromPort"] == r["ToPort"] == 5432 and "CidrIp" not in r for r in ingress)
    # Only the applications', the rotation functions' and the migration task's groups may leave for it (no service
    # reads the store yet).
    egress_to_ops = [r for r in _resources(net, "AWS::EC2::SecurityGroupEgress").values()
                     if ops_id in json.dumps(r.get("DestinationSecurityGroupId"))]
    assert sorted(r["GroupId"]["Fn::GetAtt"][0] for r in egress_to_ops) == sorted([apps_id, rotation_id, migrate_id])
    rotation_egress = [r for r in _resources(net, "AWS::EC2::SecurityGroupEgress").values()
                       if r["GroupId"] == {"Fn::GetAtt": [rotation_id, "GroupId"]}]
    rotation_egress += _resources(net, "AWS::EC2::SecurityGroup")[rotation_id].get("SecurityGroupEgress", [])
    assert sorted((r["FromPort"], r.get("CidrIp", "group")) for r in rotation_egress) == [
        (443, "10.40.0.0/16"), (5432, "group")]


def test_operational_migrations_as_a_one_off_task_with_its_own_role_and_group(synthesized: dict[str, Any]) -> None:
    """The doors stack's migration task runs `medistream infra migrate-operational` from the services' image with the
    administrator's and the logins' secrets by name (no value, no environment variable), under its own role and the
    tasks' execution role, read-only and unprivileged; its group reaches the store on 5432, the endpoints and S3's
    gateway on 443, nothing else."""
    stacks, env = synthesized["stacks"], synthesized["env"]
    doors, network = stacks.doors, stacks.network
    tasks = {t["Family"]: t for t in _resources(_template(synthesized, doors), "AWS::ECS::TaskDefinition").values()}
    task = tasks[f"medistream-{env}-operational_migrate"]
    assert _flat(task["TaskRoleArn"]).endswith(f":role/medistream-{env}-operational-migrate")
    assert _flat(task["ExecutionRoleArn"]).endswith(f":role/medistream-{env}-task-execution")
    (container,) = task["ContainerDefinitions"]
    prefix = f"medistream-{env}/operational/"
    assert [_flat(a) for a in container["Command"]] == [
        "infra", "migrate-operational", "--region", "<AWS::Region>", "--admin-secret", f"{prefix}medistream_admin",
        "--login-secret", f"{prefix}ops_writer", "--login-secret", f"{prefix}ops_reader"]
    assert "EntryPoint" not in container and "Environment" not in container and "Secrets" not in container
    assert container["ReadonlyRootFilesystem"] is True and container["User"] == "10001:10001"
    assert not [s for s in _resources(_template(synthesized, doors), "AWS::ECS::Service").values()
                if "operational" in json.dumps(s)]  # a one-off task, never a service
    net = _template(synthesized, network)
    migrate_id, ops_id = (network.get_logical_id(g.node.default_child) for g in (network.migrate_sg,
                                                                                 network.operational_sg))
    egress = [r for r in _resources(net, "AWS::EC2::SecurityGroupEgress").values()
              if r["GroupId"] == {"Fn::GetAtt": [migrate_id, "GroupId"]}]
    egress += _resources(net, "AWS::EC2::SecurityGroup")[migrate_id].get("SecurityGroupEgress", [])
    assert sorted((r["FromPort"], r.get("CidrIp") or json.dumps(r.get("DestinationPrefixListId") or
                                                                 r["DestinationSecurityGroupId"])) for r in egress) == [
        (443, "10.40.0.0/16"), (443, json.dumps({"Ref": "s3PrefixListId"})),
        (5432, json.dumps({"Fn::GetAtt": [ops_id, "GroupId"]}))]
    assert "ingress" not in json.dumps(_resources(net, "AWS::EC2::SecurityGroup")[migrate_id]).lower()


def test_operational_admin_and_reader_rotated_in_the_vpc_the_writer_not(synthesized: dict[str, Any]) -> None:
    """Secrets Manager's hosted single-user rotation, every 30 days, for the administrator's and the reader's attached
    secrets, in the isolated subnets and the rotation group, under the credentials key; no schedule for the writer
    (its reason acknowledged); the credentials key lets the rotation functions use it only through Secrets Manager,
    for this environment's operational secrets."""
    stacks, env = synthesized["stacks"], synthesized["env"]
    network = stacks.network
    stack, template = _operational(synthesized)
    assert template["Transform"] == ["AWS::SecretsManager-2024-09-16"]
    schedules = list(_resources(template, "AWS::SecretsManager::RotationSchedule").values())
    attachments = {k: v["Properties"]["SecretId"]["Ref"] for k, v in template["Resources"].items()
                   if v["Type"] == "AWS::SecretsManager::SecretTargetAttachment"}
    secrets = {k: v["Properties"]["Name"] for k, v in template["Resources"].items()
               if v["Type"] == "AWS::SecretsManager::Secret"}
    rotated = sorted(secrets[attachments[s["SecretId"]["Ref"]]] for s in schedules)
    assert rotated == [f"medistream-{env}/operational/medistream_admin", f"medistream-{env}/operational/ops_reader"]
    for schedule in schedules:
        hosted = schedule["HostedRotationLambda"]
        assert hosted["RotationType"] == "PostgreSQLSingleUser"
        assert schedule["RotationRules"] == {"ScheduleExpression": "rate(30 days)"}
        assert stack.resolve(network.rotation_sg.security_group_id) == hosted["VpcSecurityGroupIds"]
        subnets = hosted["VpcSubnetIds"]["Fn::Join"][1][::2]
        assert subnets == [stack.resolve(s.subnet_id) for s in network.vpc.isolated_subnets]
        assert hosted["KmsKeyArn"] == stack.resolve(stacks.keys.keys["credentials"].key_arn)
    (statement,) = [s for s in _key_policies(synthesized)["credentials"]
                    if s.get("Sid") == "RotationOfThisEnvironmentsOperationalSecrets"]
    assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert _flat(statement["Condition"]["StringEquals"]["kms:ViaService"]) == (
        "secretsmanager.<AWS::Region>.amazonaws.com")
    assert _flat(statement["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"]).endswith(
        f":secret:medistream-{env}/operational/*")


def test_operational_writer_secret_readable_only_by_the_ingest_role(synthesized: dict[str, Any]) -> None:
    """The three logins' secrets (RDS JSON form, under the credentials key, attached to the cluster); of every IAM
    policy in every stack, only the ingest role's names an operational secret, and that is the writer's, besides the
    migration task's (the three); the ingest application's `operational` group names it, verify-full, and loads in
    the job's own config loader."""
    from connectors.properties import load_operational_config

    stacks, env = synthesized["stacks"], synthesized["env"]
    stack, template = _operational(synthesized)
    secrets = {s["Name"]: s for s in _resources(template, "AWS::SecretsManager::Secret").values()}
    prefix = f"medistream-{env}/operational/"
    assert set(secrets) == {f"{prefix}{login}" for login in ("medistream_admin", "ops_writer", "ops_reader")}
    key = stack.resolve(stacks.keys.keys["credentials"].key_arn)
    for name, secret in secrets.items():
        assert secret["KmsKeyId"] == key
        generated = secret["GenerateSecretString"]
        assert json.loads(generated["SecretStringTemplate"]) == {
            "username": name.rsplit("/", 1)[1], "dbname": "medistream", "port": 5432}
        assert generated["GenerateStringKey"] == "password"
    assert len(_resources(template, "AWS::SecretsManager::SecretTargetAttachment")) == 3
    readers: dict[str, list[str]] = {}
    for t in synthesized["templates"].values():
        for policy in _resources(t, "AWS::IAM::ManagedPolicy").values():
            for st in _statements(policy):
                for arn in map(_flat, st["Resource"]):
                    if "/operational/" in arn:
                        assert "secretsmanager:GetSecretValue" in st["Action"]
                        readers.setdefault(_flat(policy["ManagedPolicyName"]), []).append(arn)
    assert sorted(readers) == [f"medistream-{env}-ingest-grants", f"medistream-{env}-operational-migrate-grants"]
    (arn,) = readers[f"medistream-{env}-ingest-grants"]
    assert arn.endswith(f":secret:{prefix}ops_writer*")
    assert sorted(a.rsplit(":", 1)[1] for a in readers[f"medistream-{env}-operational-migrate-grants"]) == [
        f"{prefix}{login}*" for login in ("medistream_admin", "ops_reader", "ops_writer")]
    apps = {p["ApplicationName"]: p for p in _resources(_template(synthesized, stacks.flink),
                                                        "AWS::KinesisAnalyticsV2::Application").values()}
    groups = {name: {g["PropertyGroupId"]: g["PropertyMap"] for g in
                     p["ApplicationConfiguration"]["EnvironmentProperties"]["PropertyGroups"]}
              for name, p in apps.items()}
    assert "operational" not in groups[f"medistream-partner_delivery-{env}"]
    operational = groups[f"medistream-ingest-{env}"]["operational"]
    assert operational["secret"] == f"{prefix}ops_writer" and operational["sslmode"] == "verify-full"
    assert operational["sslrootcert"] == {"Ref": "OperationalSslRootCert"}
    cfg = load_operational_config({"operational": {**operational, "sslrootcert": "/ca/rds-global-bundle.pem"}})
    assert cfg.secret_id == f"{prefix}ops_writer" and cfg.sslrootcert == "/ca/rds-global-bundle.pem"


def test_services_image_from_the_storage_stacks_repository_read_only_and_unprivileged(
        synthesized: dict[str, Any]) -> None:
    """The image repository outlives the doors (storage stack: immutable tags, scanned, the artifacts key), so the
    image is pushed before the services exist; each task runs it as the Dockerfile's user on a read-only root
    file system with a task volume at /tmp, where it writes its properties file."""
    from infra.aws.doors import IMAGE_USER, PROPERTIES_FILE, SCRATCH

    stacks, env = synthesized["stacks"], synthesized["env"]
    storage = _template(synthesized, stacks.storage)
    (repo,) = _resources(storage, "AWS::ECR::Repository").values()
    assert repo["RepositoryName"] == f"medistream-{env}/services" and repo["ImageTagMutability"] == "IMMUTABLE"
    assert repo["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert repo["EncryptionConfiguration"]["KmsKey"] == stacks.storage.resolve(stacks.keys.keys["artifacts"].key_arn)
    doors = _template(synthesized, stacks.doors)
    assert _resources(doors, "AWS::ECR::Repository") == {}
    assert PROPERTIES_FILE.startswith(f"{SCRATCH}/")
    for task in _resources(doors, "AWS::ECS::TaskDefinition").values():
        (container,) = task["ContainerDefinitions"]
        assert container["ReadonlyRootFilesystem"] is True and container["User"] == IMAGE_USER
        assert container["MountPoints"] == [{"ContainerPath": SCRATCH, "ReadOnly": False, "SourceVolume": "scratch"}]
        assert task["Volumes"] == [{"Name": "scratch"}]
        assert _flat(container["Image"]).endswith(f"/medistream-{env}/services:<ServiceImageTag>")


def test_ingest_api_task_binds_its_interface_other_services_nothing(synthesized: dict[str, Any]) -> None:
    """The ingest API's task is told (property `ingest_api.bind.host`, not an environment secret) to listen on its
    own interface, which its loader accepts; the NLB reaches it on the API's port from inside the VPC only."""
    from connectors.ingest_api.server import bind_host
    from infra.aws.network import INGEST_API_PORT, VPC_CIDR

    stacks, env = synthesized["stacks"], synthesized["env"]
    doors = _template(synthesized, stacks.doors)
    tasks = {t["Family"]: t for t in _resources(doors, "AWS::ECS::TaskDefinition").values()
             if t["Family"] != f"medistream-{env}-operational_migrate"}  # a one-off task with no property file
    for family, task in tasks.items():
        (container,) = task["ContainerDefinitions"]
        env_vars = {e["Name"]: _flat(e["Value"]) for e in container["Environment"]}
        assert set(env_vars) == {"MEDISTREAM_PROPERTIES", "MEDISTREAM_PROPERTIES_DOC"}
        doc = env_vars["MEDISTREAM_PROPERTIES_DOC"]
        if family == f"medistream-{env}-ingest_api":
            groups = {g["PropertyGroupId"]: g["PropertyMap"] for g in json.loads(doc)}
            assert bind_host(groups) == "0.0.0.0"  # noqa: S104
            assert container["PortMappings"] == [{"ContainerPort": INGEST_API_PORT, "Protocol": "tcp"}]
        else:
            assert "bind.host" not in doc, family
    net = _template(synthesized, stacks.network)
    services_id = stacks.network.get_logical_id(stacks.network.services_sg.node.default_child)
    (sg,) = [p for k, p in _resources(net, "AWS::EC2::SecurityGroup").items() if k == services_id]
    assert [(r["CidrIp"], r["FromPort"]) for r in sg["SecurityGroupIngress"]] == [(VPC_CIDR, INGEST_API_PORT)]
