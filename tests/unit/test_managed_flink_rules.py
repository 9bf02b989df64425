"""The Managed Flink stand-in's pure rules: the state machine with a fake clock, the model's request checks,
configuration merges. No server, no sleeping: a transition ends when the test finishes its operation."""

from __future__ import annotations

from typing import Any

import pytest

from infra.local.managed_flink import wire
from infra.local.managed_flink.application import ALLOWED, same_instant
from infra.local.managed_flink.applications import Registry
from infra.local.managed_flink.configuration import FlinkSettings, apply_update
from infra.local.managed_flink.errors import ApiError

ROLE = "arn:aws:iam::123456789012:role/msf"
CODE = {"CodeContentType": "ZIPFILE",
        "CodeContent": {"S3ContentLocation": {"BucketARN": "arn:aws:s3:::code", "FileKey": "v1.zip"}}}


def registry() -> Registry:
    now = iter(range(1_000, 10_000))
    return Registry(clock=lambda: float(next(now)))


def new_app(reg: Registry, snapshots: bool = True) -> str:
    reg.create({"ApplicationName": "app", "RuntimeEnvironment": "FLINK-2_2", "ServiceExecutionRole": ROLE,
                "ApplicationConfiguration": {"ApplicationCodeConfiguration": CODE,
                                             "ApplicationSnapshotConfiguration": {"SnapshotsEnabled": snapshots}}})
    return "app"


def refused(code: str, call: Any, *args: Any) -> None:
    with pytest.raises(ApiError) as caught:
        call(*args)
    assert caught.value.code == code, caught.value.message


def test_a_transition_ends_only_when_its_operation_finishes() -> None:
    reg = registry()
    name = new_app(reg)
    op = reg.start(name, None)
    assert reg.get(name).status == "STARTING"
    refused("ResourceInUseException", reg.start, name, None)
    reg.finish(op, ok=True)
    assert reg.get(name).status == "RUNNING"
    stop = reg.stop(name, force=False)
    assert reg.get(name).status == "STOPPING" and stop.snapshot is not None
    assert reg.snapshot(name, stop.snapshot).status == "CREATING"
    reg.snapshot_taken(stop, "memory://x", ok=True)
    reg.finish(stop, ok=True)
    assert reg.get(name).status == "READY" and reg.snapshot(name, stop.snapshot).status == "READY"
    assert reg.start(name, None).restore is not None  # the latest snapshot: the stop's


def test_a_cancelled_operation_cannot_finish_later() -> None:
    reg = registry()
    name = new_app(reg)
    start = reg.start(name, None)
    forced = reg.stop(name, force=True)
    assert forced.cancels == (start.id,) and reg.get(name).status == "FORCE_STOPPING"
    reg.finish(start, ok=True)  # late: ignored
    assert reg.get(name).status == "FORCE_STOPPING"
    reg.finish(forced, ok=True)
    assert reg.get(name).status == "READY"


def test_a_failed_start_goes_back_to_ready() -> None:
    reg = registry()
    name = new_app(reg)
    reg.finish(reg.start(name, None), ok=False)
    assert reg.get(name).status == "READY"


def test_version_ids_and_conditional_tokens() -> None:
    reg = registry()
    name = new_app(reg)
    token = reg.get(name).conditional_token()
    assert reg.update({"ApplicationName": name, "CurrentApplicationVersionId": 1}) is None  # READY: no restart
    assert reg.get(name).version_id == 2 and reg.get(name).conditional_token() != token
    refused("ConcurrentModificationException", reg.update, {"ApplicationName": name, "ConditionalToken": token})
    refused("ConcurrentModificationException", reg.update, {"ApplicationName": name, "CurrentApplicationVersionId": 1})


def test_only_the_statuses_the_service_allows() -> None:
    assert ALLOWED["StopApplication"] == {"RUNNING"}
    assert ALLOWED["ForceStopApplication"] == {"STARTING", "UPDATING", "STOPPING", "AUTOSCALING", "RUNNING"}
    assert ALLOWED["StartApplication"] == {"READY"} and ALLOWED["CreateApplicationSnapshot"] == {"RUNNING"}


def test_timestamps_sent_back_match_to_the_millisecond_or_the_whole_second() -> None:
    assert same_instant(1_700_000_000.123, 1_700_000_000_123)
    assert same_instant(1_700_000_000, 1_700_000_000_123)  # a client sending whole seconds
    assert not same_instant(1_700_000_000.124, 1_700_000_000_123)


@pytest.mark.parametrize(("body", "code", "text"), [
    ({}, "InvalidArgumentException", "Value null at 'applicationName'"),
    ({"ApplicationName": "a b"}, "InvalidArgumentException", "regular expression pattern"),
    ({"ApplicationName": "a" * 129}, "InvalidArgumentException", "length less than or equal to 128"),
    ({"ApplicationName": 5}, "InvalidRequestException", "must be a string"),
    ({"ApplicationName": "a", "Extra": 1}, "InvalidRequestException", "no member 'Extra'"),
    ([], "InvalidRequestException", "must be a JSON object"),
])
def test_requests_are_checked_against_botocores_model(body: Any, code: str, text: str) -> None:
    with pytest.raises(ApiError) as caught:
        wire.check_request("DescribeApplication", body)
    assert caught.value.code == code and text in caught.value.message


def test_nested_enums_and_blobs_are_checked() -> None:
    run = {"ApplicationName": "a", "RunConfiguration": {"ApplicationRestoreConfiguration": {
        "ApplicationRestoreType": "RESTORE_FROM_YESTERDAY"}}}
    with pytest.raises(ApiError, match="runConfiguration.applicationRestoreConfiguration.applicationRestoreType"):
        wire.check_request("StartApplication", run)
    zipped = {"ApplicationName": "a", "RuntimeEnvironment": "FLINK-2_2", "ServiceExecutionRole": ROLE,
              "ApplicationConfiguration": {"ApplicationCodeConfiguration": {
                  "CodeContentType": "ZIPFILE", "CodeContent": {"ZipFileContent": "not base64!"}}}}
    with pytest.raises(ApiError, match="not valid base64"):
        wire.check_request("CreateApplication", zipped)


def test_default_sections_show_the_service_defaults_and_s3_updates_merge() -> None:
    settings = FlinkSettings(code={"S3ApplicationCodeLocationDescription": {
        "BucketARN": "arn:aws:s3:::code", "FileKey": "v1.zip", "ObjectVersion": "3"}})
    apply_update(settings, {
        "FlinkApplicationConfigurationUpdate": {"CheckpointConfigurationUpdate": {"CheckpointIntervalUpdate": 5}},
        "ApplicationCodeConfigurationUpdate": {"CodeContentUpdate": {"S3ContentLocationUpdate": {
            "FileKeyUpdate": "v2.zip"}}}})
    flink = settings.describe()["FlinkApplicationConfigurationDescription"]
    assert flink["CheckpointConfigurationDescription"]["CheckpointInterval"] == 60_000  # DEFAULT ignores it
    assert settings.code_location() == "s3://code/v2.zip"  # the old object's version id is dropped
