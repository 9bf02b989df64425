"""Which Managed Flink applications `medistream jobs --target managed-flink` operates, where, with which bucket.

The commands themselves run against the Managed Flink stand-in in tests/integration/test_job_backend_msf.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.job_backend_msf import MsfSettings
from tools.job_interface import JobControlError

LOCAL_S3 = {"endpoint": "http://127.0.0.1:15000", "region": "eu-west-1", "path.style.access": "true"}


@pytest.fixture(autouse=True)
def properties(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "application_properties.json"
    path.write_text(json.dumps([{"PropertyGroupId": "s3", "PropertyMap": LOCAL_S3}]))
    monkeypatch.setenv("MEDISTREAM_PROPERTIES", str(path))
    return path


def test_local_endpoint_takes_the_stacks_s3_and_region_whatever_the_shell_holds() -> None:
    settings = MsfSettings.from_env({"MEDISTREAM_MSF_ENDPOINT": "http://127.0.0.1:9999", "AWS_REGION": "us-west-2"})
    assert settings == MsfSettings("dev", "eu-west-1", "http://127.0.0.1:9999", "http://127.0.0.1:15000",
                                   "medistream-artifacts-dev")
    assert settings.application("partner_delivery") == "medistream-partner_delivery-dev"


def test_aws_uses_the_shells_region_and_no_endpoint() -> None:
    settings = MsfSettings.from_env({"MEDISTREAM_ENVIRONMENT": "production", "AWS_REGION": "us-west-2",
                                     "MEDISTREAM_ARTIFACT_BUCKET": "medistream-artifacts-prod-123"})
    assert (settings.endpoint, settings.s3_endpoint, settings.region) == ("", "", "us-west-2")
    assert (settings.application("ingest"), settings.artifact_bucket) == (
        "medistream-ingest-production", "medistream-artifacts-prod-123")
    assert MsfSettings.from_env({}).region == "eu-west-1"  # else the `s3` group's


def test_aws_refuses_the_local_placeholder_credentials_and_an_unresolved_region(properties: Path) -> None:
    with pytest.raises(JobControlError, match="placeholder"):
        MsfSettings.from_env({"AWS_ACCESS_KEY_ID": "testing", "AWS_REGION": "us-west-2"})
    properties.write_text(json.dumps([{"PropertyGroupId": "s3", "PropertyMap": {"region": "${AWS_REGION}"}}]))
    with pytest.raises(JobControlError, match="no AWS region"):
        MsfSettings.from_env({})


@pytest.mark.parametrize("environment", ["Prod", "a b", "prod_1", "-x", "x" * 42])
def test_environment_names_that_cannot_name_an_application_and_a_bucket(environment: str) -> None:
    with pytest.raises(JobControlError, match="MEDISTREAM_ENVIRONMENT"):
        MsfSettings.from_env({"MEDISTREAM_ENVIRONMENT": environment})


def test_a_local_endpoint_needs_the_local_properties(properties: Path) -> None:
    properties.unlink()
    with pytest.raises(JobControlError, match="properties file not found"):
        MsfSettings.from_env({"MEDISTREAM_MSF_ENDPOINT": "http://127.0.0.1:9999"})
    assert MsfSettings.from_env({"AWS_REGION": "us-west-2"}).region == "us-west-2"  # AWS does not need them
