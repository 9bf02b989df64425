"""An application's Flink configuration: built from CreateApplication, changed by UpdateApplication and
StartApplication's RunConfiguration, shown by DescribeApplication. Pure: no I/O, no clock.

Rules kept as the service keeps them: a section whose ConfigurationType is DEFAULT shows the service's
defaults whatever else it was given (checkpoints every 60 s, parallelism 1, ...); property group
updates replace every group; a code update may change only part of an S3 location; a Flink
application's code is a ZIPFILE; RESTORE_FROM_CUSTOM_SNAPSHOT names its snapshot.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from infra.local.managed_flink.errors import invalid_argument, unsupported

CHECKPOINT_DEFAULTS = {"CheckpointingEnabled": True, "CheckpointInterval": 60_000, "MinPauseBetweenCheckpoints": 5_000}
MONITORING_DEFAULTS = {"MetricsLevel": "APPLICATION", "LogLevel": "INFO"}
PARALLELISM_DEFAULTS = {"Parallelism": 1, "ParallelismPerKPU": 1, "AutoScalingEnabled": True}
LATEST = {"ApplicationRestoreType": "RESTORE_FROM_LATEST_SNAPSHOT"}
_BUCKET_ARN = re.compile(r"arn:aws[a-z-]*:s3:::([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])")
# Parts of the model this stand-in does not serve: refused by name rather than silently dropped.
_NOT_SERVED = ("SqlApplicationConfiguration", "ZeppelinApplicationConfiguration", "VpcConfigurations",
               "ApplicationEncryptionConfiguration")


@dataclass
class FlinkSettings:
    """One application's configuration, in the service's wire vocabulary."""

    code: dict[str, Any] | None = None  # the CodeContentDescription
    property_groups: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] = field(default_factory=lambda: {"ConfigurationType": "DEFAULT"})
    monitoring: dict[str, Any] = field(default_factory=lambda: {"ConfigurationType": "DEFAULT"})
    parallelism: dict[str, Any] = field(default_factory=lambda: {"ConfigurationType": "DEFAULT"})
    snapshots_enabled: bool = False
    snapshot_mode: str = "APPLICATION_SNAPSHOTS_LEGACY"
    rollback_enabled: bool = False
    restore: dict[str, Any] = field(default_factory=lambda: dict(LATEST))
    allow_non_restored_state: bool = False

    def copy(self) -> FlinkSettings:
        """A deep copy, so a refused update leaves the original untouched."""
        return copy.deepcopy(self)

    def code_location(self) -> str | None:
        """s3://bucket/key[?versionId=v] of S3 code; None for inline or absent code."""
        s3 = (self.code or {}).get("S3ApplicationCodeLocationDescription")
        if s3 is None:
            return None
        match = _BUCKET_ARN.fullmatch(s3["BucketARN"])
        bucket = match.group(1) if match else s3["BucketARN"]
        version = f"?versionId={s3['ObjectVersion']}" if s3.get("ObjectVersion") else ""
        return f"s3://{bucket}/{s3['FileKey']}{version}"

    def properties(self) -> dict[str, dict[str, str]]:
        """The runtime properties, as application_properties.json holds them."""
        return {g["PropertyGroupId"]: dict(g["PropertyMap"]) for g in self.property_groups}

    def current_parallelism(self) -> int:
        """The parallelism a run of this configuration uses."""
        return int(_section(self.parallelism, PARALLELISM_DEFAULTS)["Parallelism"])

    def describe(self) -> dict[str, Any]:
        """The ApplicationConfigurationDescription."""
        code: dict[str, Any] = {"CodeContentType": "ZIPFILE"}
        if self.code is not None:
            code["CodeContentDescription"] = copy.deepcopy(self.code)
        parallelism = _section(self.parallelism, PARALLELISM_DEFAULTS)
        parallelism["CurrentParallelism"] = parallelism["Parallelism"]
        return {
            "ApplicationCodeConfigurationDescription": code,
            "RunConfigurationDescription": {
                "ApplicationRestoreConfigurationDescription": dict(self.restore),
                "FlinkRunConfigurationDescription": {"AllowNonRestoredState": self.allow_non_restored_state},
            },
            "FlinkApplicationConfigurationDescription": {
                "CheckpointConfigurationDescription": _section(self.checkpoint, CHECKPOINT_DEFAULTS),
                "MonitoringConfigurationDescription": _section(self.monitoring, MONITORING_DEFAULTS),
                "ParallelismConfigurationDescription": parallelism,
            },
            "EnvironmentPropertyDescriptions": {"PropertyGroupDescriptions": copy.deepcopy(self.property_groups)},
            "ApplicationSnapshotConfigurationDescription": {
                "SnapshotsEnabled": self.snapshots_enabled, "SnapshotMode": self.snapshot_mode,
            },
            "ApplicationSystemRollbackConfigurationDescription": {"RollbackEnabled": self.rollback_enabled},
        }


def _section(given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    if given.get("ConfigurationType", "DEFAULT") == "DEFAULT":
        return {"ConfigurationType": "DEFAULT", **defaults}
    return {**defaults, **given}


def _strip_update(update: dict[str, Any]) -> dict[str, Any]:
    """`{"ParallelismUpdate": 4}` -> `{"Parallelism": 4}`: an update's members name the fields they set."""
    return {k.removesuffix("Update"): v for k, v in update.items()}


def _merge_section(current: dict[str, Any], update: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    changes = _strip_update(update)
    kind = changes.pop("ConfigurationType", current.get("ConfigurationType", "DEFAULT"))
    if kind == "DEFAULT":
        return {"ConfigurationType": "DEFAULT"}
    return {**_section(current, defaults), **changes, "ConfigurationType": "CUSTOM"}


def _s3_description(bucket_arn: str, key: str, version: str | None) -> dict[str, Any]:
    if not _BUCKET_ARN.fullmatch(bucket_arn):
        raise invalid_argument(f"BucketARN {bucket_arn!r} is not the ARN of an S3 bucket")
    loc: dict[str, Any] = {"BucketARN": bucket_arn, "FileKey": key}
    if version:
        loc["ObjectVersion"] = version
    return {"S3ApplicationCodeLocationDescription": loc}


def _zip_description(b64: str) -> dict[str, Any]:
    data = base64.b64decode(b64)
    if not data:
        raise invalid_argument("ZipFileContent is empty")
    return {"CodeMD5": hashlib.md5(data, usedforsecurity=False).hexdigest(), "CodeSize": len(data)}


def _has_code(kind: str, content: dict[str, Any], where: str) -> bool:
    """Whether `content` gives code; refuses what a Flink application cannot run."""
    if kind != "ZIPFILE":
        raise invalid_argument(f"{where}: an Apache Flink application's code is a ZIPFILE, not {kind}")
    given = [k for k in content if content[k] is not None]
    if any(k.startswith("TextContent") for k in given):
        raise invalid_argument(f"{where}: TextContent is for SQL applications; give a zip file")
    if len(given) > 1:
        raise invalid_argument(f"{where}: give one of ZipFileContent and S3ContentLocation, not {given}")
    return bool(given)


def _property_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [g["PropertyGroupId"] for g in groups]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise invalid_argument(f"property group {dup[0]!r} is given more than once")
    return copy.deepcopy(groups)


def _refuse_not_served(config: dict[str, Any]) -> None:
    for name in _NOT_SERVED:
        if name in config or f"{name}Update" in config or f"{name}Updates" in config:
            raise unsupported(f"the Managed Flink stand-in does not serve {name}")


def from_create(config: dict[str, Any] | None) -> FlinkSettings:
    """The settings of CreateApplication's ApplicationConfiguration (checked against the model already)."""
    settings, config = FlinkSettings(), config or {}
    _refuse_not_served(config)
    code = config.get("ApplicationCodeConfiguration")
    if code is not None:
        content = code.get("CodeContent") or {}
        if _has_code(code["CodeContentType"], content, "ApplicationCodeConfiguration"):
            if "S3ContentLocation" in content:
                s3 = content["S3ContentLocation"]
                settings.code = _s3_description(s3["BucketARN"], s3["FileKey"], s3.get("ObjectVersion"))
            else:
                settings.code = _zip_description(content["ZipFileContent"])
    flink = config.get("FlinkApplicationConfiguration") or {}
    settings.checkpoint = dict(flink.get("CheckpointConfiguration") or settings.checkpoint)
    settings.monitoring = dict(flink.get("MonitoringConfiguration") or settings.monitoring)
    settings.parallelism = dict(flink.get("ParallelismConfiguration") or settings.parallelism)
    if "EnvironmentProperties" in config:
        settings.property_groups = _property_groups(config["EnvironmentProperties"]["PropertyGroups"])
    snapshots = config.get("ApplicationSnapshotConfiguration")
    if snapshots is not None:
        settings.snapshots_enabled = snapshots["SnapshotsEnabled"]
        settings.snapshot_mode = _snapshot_mode(snapshots.get("SnapshotMode", settings.snapshot_mode))
    rollback = config.get("ApplicationSystemRollbackConfiguration")
    if rollback is not None:
        settings.rollback_enabled = rollback["RollbackEnabled"]
    return settings


def _snapshot_mode(mode: str) -> str:
    if mode != "APPLICATION_SNAPSHOTS_LEGACY":
        raise unsupported(f"the Managed Flink stand-in serves application snapshots only, not {mode}")
    return mode


def apply_update(settings: FlinkSettings, update: dict[str, Any]) -> None:
    """Apply an ApplicationConfigurationUpdate to `settings` (a copy: a refusal may leave it half-changed)."""
    _refuse_not_served(update)
    code = update.get("ApplicationCodeConfigurationUpdate")
    if code is not None:
        _update_code(settings, code)
    flink = update.get("FlinkApplicationConfigurationUpdate") or {}
    if "CheckpointConfigurationUpdate" in flink:
        settings.checkpoint = _merge_section(settings.checkpoint, flink["CheckpointConfigurationUpdate"],
                                             CHECKPOINT_DEFAULTS)
    if "MonitoringConfigurationUpdate" in flink:
        settings.monitoring = _merge_section(settings.monitoring, flink["MonitoringConfigurationUpdate"],
                                             MONITORING_DEFAULTS)
    if "ParallelismConfigurationUpdate" in flink:
        settings.parallelism = _merge_section(settings.parallelism, flink["ParallelismConfigurationUpdate"],
                                              PARALLELISM_DEFAULTS)
    if "EnvironmentPropertyUpdates" in update:
        settings.property_groups = _property_groups(update["EnvironmentPropertyUpdates"]["PropertyGroups"])
    snapshots = update.get("ApplicationSnapshotConfigurationUpdate")
    if snapshots is not None:
        settings.snapshots_enabled = snapshots["SnapshotsEnabledUpdate"]
        if "SnapshotModeUpdate" in snapshots:
            settings.snapshot_mode = _snapshot_mode(snapshots["SnapshotModeUpdate"])
    rollback = update.get("ApplicationSystemRollbackConfigurationUpdate")
    if rollback is not None:
        settings.rollback_enabled = rollback["RollbackEnabledUpdate"]


def _update_code(settings: FlinkSettings, code: dict[str, Any]) -> None:
    content = code.get("CodeContentUpdate") or {}
    if not _has_code(code.get("CodeContentTypeUpdate", "ZIPFILE"), content, "ApplicationCodeConfigurationUpdate"):
        return
    if "ZipFileContentUpdate" in content:
        settings.code = _zip_description(content["ZipFileContentUpdate"])
        return
    s3 = _strip_update(content["S3ContentLocationUpdate"])
    current = dict((settings.code or {}).get("S3ApplicationCodeLocationDescription") or {})
    moved = any(k in s3 and s3[k] != current.get(k) for k in ("BucketARN", "FileKey"))
    if moved and "ObjectVersion" not in s3:
        current.pop("ObjectVersion", None)  # a version id belongs to the object it was given with
    merged = {**current, **s3}
    if "BucketARN" not in merged or "FileKey" not in merged:
        raise invalid_argument("S3ContentLocationUpdate: the application has no S3 code yet; "
                               "give both BucketARNUpdate and FileKeyUpdate")
    settings.code = _s3_description(merged["BucketARN"], merged["FileKey"], merged.get("ObjectVersion"))


def apply_run_configuration(settings: FlinkSettings, run: dict[str, Any]) -> None:
    """Apply a RunConfiguration (StartApplication) or RunConfigurationUpdate (UpdateApplication)."""
    if run.get("SqlRunConfigurations"):
        raise invalid_argument("SqlRunConfigurations are for SQL applications")
    restore = run.get("ApplicationRestoreConfiguration")
    if restore is not None:
        kind, name = restore["ApplicationRestoreType"], restore.get("SnapshotName")
        if restore.get("SnapshotArn"):
            raise unsupported("the Managed Flink stand-in restores application snapshots by name, not by ARN")
        if kind == "RESTORE_FROM_CUSTOM_SNAPSHOT" and not name:
            raise invalid_argument("RESTORE_FROM_CUSTOM_SNAPSHOT needs a SnapshotName")
        if kind != "RESTORE_FROM_CUSTOM_SNAPSHOT" and name:
            raise invalid_argument(f"SnapshotName is only for RESTORE_FROM_CUSTOM_SNAPSHOT, not {kind}")
        settings.restore = {"ApplicationRestoreType": kind, **({"SnapshotName": name} if name else {})}
    flink = run.get("FlinkRunConfiguration")
    if flink is not None and "AllowNonRestoredState" in flink:
        settings.allow_non_restored_state = flink["AllowNonRestoredState"]
