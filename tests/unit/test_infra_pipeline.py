"""The release pipeline stack (infra/aws/pipeline.py, issue 23): its stages in order, who may sign, who may deploy.

Synthesized once per environment with the nag packs (any unacknowledged finding fails the synth), from the same
app `medistream infra` builds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.aws.config import FLINK_JOBS, names
from tools import infra as infra_tool

ENVIRONMENTS = ("dev", "prod")


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def pipeline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env = request.param
    out = tmp_path_factory.mktemp(f"cdk-pipeline-{env}")
    app, _stacks = infra_tool.build(env, outdir=str(out))
    app.synth()
    report = json.loads((out / "validation-report.json").read_text())
    template = json.loads((out / f"medistream-{env}-pipeline.template.json").read_text())
    templates = [json.loads(p.read_text()) for p in Path(out).glob("*.template.json")]
    return {"env": env, "template": template, "templates": templates, "report": report}


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in template["Resources"].items() if v["Type"] == kind}


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for st in document["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        found.append({**st, "Action": actions})
    return found


def _role_of(template: dict[str, Any], stage: str) -> str:
    roles = _resources(template, "AWS::IAM::Role")
    return next(logical for logical, props in roles.items() if props["RoleName"].endswith(f"-release-{stage}"))


def _policies_by_role(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    by_role: dict[str, list[dict[str, Any]]] = {}
    for policy in _resources(template, "AWS::IAM::ManagedPolicy").values():
        for role in policy.get("Roles", []):
            by_role.setdefault(role["Ref"], []).extend(_statements(policy["PolicyDocument"]))
    return by_role


def test_no_unacknowledged_finding_and_the_stages_in_order(pipeline: dict[str, Any]) -> None:
    assert pipeline["report"]["pluginReports"] == []
    (props,) = _resources(pipeline["template"], "AWS::CodePipeline::Pipeline").values()
    stages = [s["Name"] for s in props["Stages"]]
    approval = ["Approve"] if pipeline["env"] == "prod" else []
    assert stages == ["Source", "Gates", "Sign", "Publish", *approval, "Deploy"]
    # The release's gates (the tests' fast tier) and the long tier in parallel: one stage, one run order.
    (gates,) = [s for s in props["Stages"] if s["Name"] == "Gates"]
    assert {a["Name"]: a.get("RunOrder", 1) for a in gates["Actions"]} == {"Gates": 1, "LongTier": 1}
    assert props["PipelineType"] == "V2"


def test_only_the_deploy_role_may_update_the_applications(pipeline: dict[str, Any]) -> None:
    """Across every stack of the app, UpdateApplication is granted once: to the deploy stage, on this environment's
    two applications by name."""
    n = names(pipeline["env"], "123456789012")
    grants = []
    for template in pipeline["templates"]:
        for kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            for logical, policy in _resources(template, kind).items():
                for st in _statements(policy["PolicyDocument"]):
                    if {"kinesisanalytics:UpdateApplication", "kinesisanalytics:*", "*"} & set(st["Action"]):
                        grants.append((logical, policy, st))
    assert len(grants) == 1
    logical, policy, statement = grants[0]
    assert [r["Ref"] for r in policy["Roles"]] == [_role_of(pipeline["template"], "deploy")]
    resources = json.dumps(statement["Resource"])
    assert all(f"application/{n.application(job)}" in resources for job in FLINK_JOBS)
    assert statement["Resource"] and "*" not in resources.replace("log-stream:*", "")


def test_only_the_sign_role_signs_and_no_iam_policy_uses_kms(pipeline: dict[str, Any]) -> None:
    template = pipeline["template"]
    keys = _resources(template, "AWS::KMS::Key")
    (signing,) = [k for k in keys.values() if k.get("KeySpec") == "ECC_NIST_P256"]
    assert signing["KeyUsage"] == "SIGN_VERIFY"
    signers = [st for st in _statements(signing["KeyPolicy"]) if "kms:Sign" in st["Action"] or "kms:*" in st["Action"]]
    assert len(signers) == 1 and signers[0]["Principal"] == {"AWS": {"Fn::GetAtt": [_role_of(template, "sign"),
                                                                                     "Arn"]}}
    for st in _statements(signing["KeyPolicy"]):  # the account administers, never signs
        if "root" in json.dumps(st["Principal"]):
            assert not {"kms:Sign", "kms:*"} & set(st["Action"])
    for statements in _policies_by_role(template).values():
        assert not [a for st in statements for a in st["Action"] if a.startswith("kms:")]


def test_the_build_role_cannot_deploy_sign_or_publish(pipeline: dict[str, Any]) -> None:
    template = pipeline["template"]
    gates = _policies_by_role(template)[_role_of(template, "gates")]
    actions = {a for st in gates for a in st["Action"]}
    assert actions == {"s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "logs:CreateLogStream",
                       "logs:PutLogEvents"}
    releases = next(logical for logical, b in _resources(template, "AWS::S3::Bucket").items()
                    if "releases" in json.dumps(b.get("BucketName", "")))
    assert releases not in json.dumps(gates)  # its writes go to the pipeline's artifact bucket only
    (policy,) = [p for p in _resources(template, "AWS::S3::BucketPolicy").values()
                 if p["Bucket"] == {"Ref": releases}]
    (deny,) = [st for st in _statements(policy["PolicyDocument"]) if st.get("Sid") == "OnlyThePipelineWritesReleases"]
    allowed = json.dumps(deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"])
    assert _role_of(template, "publish") in allowed and _role_of(template, "deploy") in allowed
    assert _role_of(template, "gates") not in allowed and _role_of(template, "sign") not in allowed


def test_the_long_tier_reads_the_source_and_writes_only_its_logs(pipeline: dict[str, Any]) -> None:
    template = pipeline["template"]
    statements = _policies_by_role(template)[_role_of(template, "long-tier")]
    assert {a for st in statements for a in st["Action"]} == {"s3:GetObject", "s3:GetObjectVersion",
                                                               "logs:CreateLogStream", "logs:PutLogEvents"}
    (project,) = [p for p in _resources(template, "AWS::CodeBuild::Project").values()
                  if p["Name"].endswith("-release-long-tier")]
    assert "./medistream test -m long" in project["Source"]["BuildSpec"]


def test_tamper_response_rules_and_alarm_reach_the_encrypted_topic(pipeline: dict[str, Any]) -> None:
    template = pipeline["template"]
    (topic_id,) = _resources(template, "AWS::SNS::Topic")
    assert "KmsMasterKeyId" in _resources(template, "AWS::SNS::Topic")[topic_id]
    by_name = {props["Name"]: props for props in _resources(template, "AWS::Events::Rule").values()}
    assert len(by_name) == 2
    keys = next(p for n, p in by_name.items() if n.endswith("signing-key-changed"))["EventPattern"]
    signing = next(k for k, v in _resources(template, "AWS::KMS::Key").items() if v.get("KeySpec") == "ECC_NIST_P256")
    assert "PutKeyPolicy" in keys["detail"]["eventName"] and signing in json.dumps(keys["detail"]["resources"])
    writes = next(p for n, p in by_name.items() if n.endswith("releases-written-outside-pipeline"))["EventPattern"]
    issuer = writes["detail"]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"][0]["anything-but"]
    assert {json.dumps(a) for a in issuer} == {json.dumps({"Fn::GetAtt": [_role_of(template, r), "Arn"]})
                                              for r in ("publish", "deploy")}
    assert all(json.dumps({"Ref": topic_id}) in json.dumps(p["Targets"]) for p in by_name.values())
    (alarm,) = _resources(template, "AWS::CloudWatch::Alarm").values()
    assert alarm["AlarmActions"] == [{"Ref": topic_id}] and alarm["Threshold"] == 1


def test_the_refusal_alarm_matches_what_a_refused_deploy_prints() -> None:
    """The metric filter's terms occur in the lines verify and both back ends print when they refuse a zip."""
    import inspect

    from infra.aws.pipeline import REFUSAL_TERMS
    from tools import attest, deploy, job_backend_msf

    printed = inspect.getsource(attest.main) + inspect.getsource(deploy.check_signed) + \
        inspect.getsource(job_backend_msf.ManagedFlinkBackend.verify_zip)
    assert "REFUSED" in inspect.getsource(attest.main)
    for term in REFUSAL_TERMS:
        assert term in printed
    assert "refused, nothing submitted" in inspect.getsource(deploy.check_signed)
    assert "refused, nothing uploaded" in inspect.getsource(job_backend_msf.ManagedFlinkBackend.verify_zip)
