"""`medistream jobs --target managed-flink`: the jobs as Managed Service for Apache Flink applications.

One application per job and environment, `medistream-<job>-<environment>` (MEDISTREAM_ENVIRONMENT,
default dev), operated through the kinesisanalyticsv2 API; the application itself is created by
whoever provisions the environment. MEDISTREAM_MSF_ENDPOINT points the client at the local stand-in
(decision 0019) and S3 at the `s3` group's endpoint, with placeholder credentials given to the clients
directly, so no real credentials are ever looked up; unset, every call goes to AWS in the region of
AWS_REGION (else the `s3` group's). A savepoint here is a snapshot, named by its snapshot name.

- `status`: DescribeApplication and ListApplicationSnapshots. Uptime is the time since the
  application's LastUpdateTimestamp while RUNNING (an upper bound when it was started after its last
  update). The last checkpoint, restarts, records in/out and consumer lag are CloudWatch metrics on
  Managed Flink (issue 21) and stay empty here.
- `savepoint`: CreateApplicationSnapshot `medistream-<job>-<UTC time>`, returned once READY.
- `stop`: StopApplication, not forced: the service takes a snapshot, then stops; the name of that
  snapshot is returned once the application is READY. Refused while snapshots are disabled, since
  such a stop keeps no state.
- `start`: with a zip, its signature is checked first (`tools.attest.check_for_deploy` with the signing key
  of the environment, `local` on the stand-in; prod takes only zips whose provenance records every release
  gate passed; the verdict audited); a refused zip is neither uploaded nor applied. The zip, its envelope,
  SBOMs and provenance go to the artifact bucket (`artifacts/<zip name>` and its companions) and UpdateApplication
  points the READY application at it (a new version id); then StartApplication restores the named
  snapshot (RESTORE_FROM_CUSTOM_SNAPSHOT) or nothing (SKIP_RESTORE_FROM_SNAPSHOT), and returns once
  RUNNING. The service keeps that restore configuration on the application: a later restart it makes
  by itself (UpdateApplication of the running application) restores per it.
- `upgrade` is job_control's stop + start, not UpdateApplication of the RUNNING application (the
  service's own switch: it snapshots, stops and restarts on the new code by itself). Stop + start
  restores exactly the snapshot the stop took (named in the audit log) instead of whatever the stored
  restore configuration says, and a failed start leaves a READY application with that snapshot and
  the old zip in the bucket, so `start --zip OLD --savepoint NAME` goes back. Both cost one stop and
  one start. Snapshots are opaque (`held_state` is None), so the check before anything stops compares
  the operator ids of the zip the application runs (from its S3 code location) with the new zip's.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from connectors.properties import ConfigError, default_properties_path, read_property_groups
from tools.job_interface import JOBS, JobControlError, JobStatus
from tools.signing import ENVIRONMENTS, SignatureError, SigningSettings, companion_paths, envelope_path

ENVIRONMENT = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")  # part of an application and a bucket name
PLACEHOLDER_KEY = "testing"  # connectors.properties.local_aws_environment's access key id
LOCAL_CREDENTIALS = {"aws_access_key_id": PLACEHOLDER_KEY, "aws_secret_access_key": PLACEHOLDER_KEY}
OperatorIds = Callable[[Path, str], set[str]]


@dataclass(frozen=True)
class MsfSettings:
    """Which applications, where: the environment, the API endpoints and region, the artifact bucket."""

    environment: str
    region: str
    endpoint: str  # kinesisanalyticsv2 endpoint override (the local stand-in); "" = AWS
    s3_endpoint: str  # "" = AWS
    artifact_bucket: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MsfSettings:
        """From MEDISTREAM_ENVIRONMENT, MEDISTREAM_MSF_ENDPOINT, MEDISTREAM_ARTIFACT_BUCKET and the `s3` group."""
        env = os.environ if env is None else env
        environment = env.get("MEDISTREAM_ENVIRONMENT") or "dev"
        if not ENVIRONMENT.fullmatch(environment):
            raise JobControlError(f"MEDISTREAM_ENVIRONMENT {environment!r} must be lower-case letters, digits "
                                  "and hyphens (it names applications and a bucket)")
        endpoint = env.get("MEDISTREAM_MSF_ENDPOINT", "")
        s3 = _s3_group(required=bool(endpoint))
        if endpoint:  # the local stack: its S3 and region, whatever the shell holds
            region, s3_endpoint = s3.get("region") or "us-east-1", s3.get("endpoint", "")
        else:
            if env.get("AWS_ACCESS_KEY_ID") == PLACEHOLDER_KEY:
                raise JobControlError("AWS_ACCESS_KEY_ID is the local stack's placeholder, and MEDISTREAM_MSF_ENDPOINT "
                                      "is unset (AWS): give real credentials or set the endpoint of the stand-in")
            configured = s3.get("region", "")
            region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or \
                ("" if "${" in configured else configured)
            if not region:
                raise JobControlError("no AWS region: set AWS_REGION (or the `s3` group's region)")
            s3_endpoint = ""
        bucket = env.get("MEDISTREAM_ARTIFACT_BUCKET") or f"medistream-artifacts-{environment}"
        return cls(environment, region, endpoint, s3_endpoint, bucket)

    def application(self, job: str) -> str:
        """The application that runs `job` in this environment."""
        return f"medistream-{job}-{self.environment}"


def _s3_group(required: bool) -> dict[str, str]:
    try:
        return dict(read_property_groups(default_properties_path()).get("s3", {}))
    except ConfigError as err:
        if required:
            raise JobControlError(f"the local stack's S3 endpoint: {err}") from None
        return {}


def flink_operator_ids(zip_path: Path, job: str, signing: SigningSettings | None = None) -> set[str]:
    """The operator ids of `job` in `zip_path`, from the zip's own client (the Flink CLI, no cluster); the zip's
    signature is checked first with `signing`'s key."""
    from tools import deploy

    try:
        return set(deploy.operator_ids(zip_path, job, signing=signing)["operators"])
    except deploy.DeployError as err:
        raise JobControlError(str(err)) from None


class ManagedFlinkBackend:
    """The jobs as Managed Flink applications (see the module docstring for what each command calls)."""

    target = "managed-flink"

    def __init__(self, settings: MsfSettings, ids_of: OperatorIds | None = None, timeout_s: float = 1800,
                 max_poll_s: float = 5.0, audit: Any = None) -> None:
        self.settings, self.timeout_s, self.max_poll_s, self.audit = settings, timeout_s, max_poll_s, audit
        self.ids_of: OperatorIds = ids_of or (lambda path, job: flink_operator_ids(path, job, self.signing()))
        local = LOCAL_CREDENTIALS if settings.endpoint else {}
        config = Config(connect_timeout=5, read_timeout=30, retries={"mode": "standard", "max_attempts": 3})
        self.msf = boto3.client("kinesisanalyticsv2", endpoint_url=settings.endpoint or None,
                                region_name=settings.region, config=config, **local)
        self.s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint or None, region_name=settings.region,
                               config=config, **local)

    @classmethod
    def from_env(cls) -> ManagedFlinkBackend:
        """The back end `medistream jobs --target managed-flink` uses."""
        return cls(MsfSettings.from_env())

    # What the service says.

    def _describe(self, job: str) -> dict[str, Any] | None:
        name = self.settings.application(job)
        try:
            return dict(self.msf.describe_application(ApplicationName=name)["ApplicationDetail"])
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise _refusal(f"DescribeApplication {name}", err) from None
        except BotoCoreError as err:
            raise JobControlError(f"DescribeApplication {name}: {err}") from None

    def _app(self, job: str) -> dict[str, Any]:
        found = self._describe(job)
        if found is None:
            raise JobControlError(f"{job} has no Managed Flink application {self.settings.application(job)} in "
                                  f"{self.settings.region}: create it first; nothing changed")
        return found

    def _snapshots(self, job: str) -> list[dict[str, Any]]:
        name, found, token = self.settings.application(job), [], None
        while True:
            with _calling(f"ListApplicationSnapshots {name}"):
                page = self.msf.list_application_snapshots(ApplicationName=name, Limit=50,
                                                           **({"NextToken": token} if token else {}))
            found += page.get("SnapshotSummaries", [])
            token = page.get("NextToken")
            if not token:
                return found

    def list(self) -> list[JobStatus]:
        return [self.status(job) for job in JOBS]

    def status(self, job: str) -> JobStatus:
        """State, version, uptime and last snapshot; metrics (checkpoints, lag, records) are issue 21."""
        detail = self._describe(job)
        if detail is None:
            return JobStatus(job, None, "NOT_DEPLOYED")
        state = str(detail["ApplicationStatus"])
        updated = detail.get("LastUpdateTimestamp")
        uptime = round((datetime.now(UTC) - updated).total_seconds(), 1) if state == "RUNNING" and updated else None
        code = _code_location(detail)
        return JobStatus(job=job, job_id=detail["ApplicationName"], state=state, uptime_s=uptime,
                         last_savepoint=_newest_ready(self._snapshots(job)),
                         version=f"v{detail['ApplicationVersionId']} {code[1] if code else '(inline zip)'}")

    # Snapshots, stop and start.

    def savepoint(self, job: str) -> str:
        name = self.settings.application(job)
        detail = self._app(job)
        self._require(job, detail, "RUNNING", "take a snapshot of")
        _require_snapshots(detail, "a snapshot is refused; nothing changed")
        snapshot = f"medistream-{job}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}Z"
        with _calling(f"CreateApplicationSnapshot {name}"):
            self.msf.create_application_snapshot(ApplicationName=name, SnapshotName=snapshot)

        def ready() -> bool:
            with _calling(f"DescribeApplicationSnapshot {name} {snapshot}"):
                found = self.msf.describe_application_snapshot(ApplicationName=name, SnapshotName=snapshot)
            status = found["SnapshotDetails"]["SnapshotStatus"]
            if status == "FAILED":
                raise JobControlError(f"snapshot {snapshot} of {name} FAILED; the application keeps running")
            return bool(status == "READY")

        self._wait(f"snapshot {snapshot} of {name} READY", ready)
        return snapshot

    def stop(self, job: str) -> str:
        name, detail = self.settings.application(job), self._app(job)
        self._require(job, detail, "RUNNING", "stop")
        _require_snapshots(detail, "a stop would keep none of its state; nothing was stopped")
        before = {s["SnapshotName"] for s in self._snapshots(job)}
        with _calling(f"StopApplication {name}"):
            self.msf.stop_application(ApplicationName=name, Force=False)
        self._await_status(job, "READY", passing={"RUNNING", "STOPPING"})
        taken = _newest_ready([s for s in self._snapshots(job) if s["SnapshotName"] not in before])
        if taken is None:
            raise JobControlError(f"{name} stopped, but its stop snapshot is not READY: restore from the last "
                                  f"savepoint ({_newest_ready(self._snapshots(job))}) or start --fresh")
        return taken

    def start(self, job: str, zip_path: Path | None, savepoint: str | None, allow_non_restored_state: bool
              ) -> JobStatus:
        name, detail = self.settings.application(job), self._app(job)
        self._require(job, detail, "READY", "start")
        if savepoint is not None:
            ready = {s["SnapshotName"] for s in self._snapshots(job) if s["SnapshotStatus"] == "READY"}
            if savepoint not in ready:
                raise JobControlError(f"{name} has no READY snapshot {savepoint!r}; nothing changed")
        if zip_path is not None:
            self._update_code(job, detail, zip_path)
        restore = ({"ApplicationRestoreType": "RESTORE_FROM_CUSTOM_SNAPSHOT", "SnapshotName": savepoint}
                   if savepoint else {"ApplicationRestoreType": "SKIP_RESTORE_FROM_SNAPSHOT"})
        with _calling(f"StartApplication {name}"):
            self.msf.start_application(ApplicationName=name, RunConfiguration={
                "ApplicationRestoreConfiguration": restore,
                "FlinkRunConfiguration": {"AllowNonRestoredState": allow_non_restored_state}})
        self._await_status(job, "RUNNING", passing={"READY", "STARTING"}, failed_after="STARTING")
        return self.status(job)

    def signing(self) -> SigningSettings:
        """The release key zips must carry here: the local stack's on the stand-in, else the environment's."""
        environment = "local" if self.settings.endpoint else self.settings.environment
        if environment not in ENVIRONMENTS:
            raise JobControlError(f"no release signing key for environment {environment!r} (one of "
                                  f"{', '.join(ENVIRONMENTS)}): nothing changed")
        try:
            return SigningSettings.for_environment(environment)
        except SignatureError as err:
            raise JobControlError(str(err)) from None

    def verify_zip(self, zip_path: Path) -> None:
        """Check the zip's signature for this environment (audited); JobControlError when refused."""
        from botocore.exceptions import BotoCoreError, ClientError

        from connectors.audit import AuditError
        from tools.attest import check_for_deploy

        try:
            check_for_deploy(zip_path, f"Managed Flink {self.settings.environment}", self.signing(), audit=self.audit)
        except SignatureError as err:
            raise JobControlError(f"refused, nothing uploaded or changed: {err}") from None
        except (BotoCoreError, ClientError, AuditError) as err:
            raise JobControlError(f"the signature verdict could not be audited; nothing changed: {err}") from None

    def _update_code(self, job: str, detail: dict[str, Any], zip_path: Path) -> None:
        """Verify and upload the zip (with its signature, SBOMs, provenance) and point the (READY) application at
        it: a new application version."""
        if not zip_path.is_file():
            raise JobControlError(f"no zip at {zip_path}; nothing changed")
        self.verify_zip(zip_path)
        bucket, key = self.settings.artifact_bucket, f"artifacts/{zip_path.name}"
        self._ensure_bucket(bucket)
        with _calling(f"upload to s3://{bucket}/{key}"):
            for companion in (envelope_path(zip_path), *companion_paths(zip_path).values()):
                self.s3.upload_file(str(companion), bucket, f"artifacts/{companion.name}")
            self.s3.upload_file(str(zip_path), bucket, key)
            object_version = self.s3.head_object(Bucket=bucket, Key=key).get("VersionId")
        partition = str(detail["ApplicationARN"]).split(":")[1]
        location = {"BucketARNUpdate": f"arn:{partition}:s3:::{bucket}", "FileKeyUpdate": key}
        if object_version and object_version != "null":
            location["ObjectVersionUpdate"] = object_version
        name = self.settings.application(job)
        with _calling(f"UpdateApplication {name}"):
            self.msf.update_application(
                ApplicationName=name, CurrentApplicationVersionId=detail["ApplicationVersionId"],
                ApplicationConfigurationUpdate={"ApplicationCodeConfigurationUpdate": {
                    "CodeContentTypeUpdate": "ZIPFILE", "CodeContentUpdate": {"S3ContentLocationUpdate": location}}})
        self._await_status(job, "READY", passing={"UPDATING"})

    def _ensure_bucket(self, bucket: str) -> None:
        try:
            self.s3.head_bucket(Bucket=bucket)
            return
        except ClientError as err:
            if not self.settings.endpoint:  # on AWS the bucket is provisioned with the environment
                raise _refusal(f"artifact bucket {bucket}", err) from None
        except BotoCoreError as err:
            raise JobControlError(f"artifact bucket {bucket}: {err}") from None
        where = {} if self.settings.region == "us-east-1" else \
            {"CreateBucketConfiguration": {"LocationConstraint": self.settings.region}}
        with _calling(f"create the local artifact bucket {bucket}"):
            self.s3.create_bucket(Bucket=bucket, **where)

    # The upgrade check.

    def held_state(self, job: str, savepoint: str) -> dict[str, int] | None:
        return None  # a Managed Flink snapshot cannot be read from outside the service

    def running_operator_ids(self, job: str) -> set[str] | None:
        """The operator ids of the zip at the application's S3 code location (None for inline code)."""
        code = _code_location(self._app(job))
        if code is None:
            return None
        bucket, key, version = code
        with tempfile.TemporaryDirectory(prefix="medistream-msf-") as folder:
            local = Path(folder) / Path(key).name
            with _calling(f"download s3://{bucket}/{key}"):
                self.s3.download_file(bucket, key, str(local), ExtraArgs={"VersionId": version} if version else None)
            # Its signature and companions, uploaded beside it: its code runs here, so it is verified again.
            prefix = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
            for companion in (envelope_path(local), *companion_paths(local).values()):
                with _calling(f"download s3://{bucket}/{prefix}{companion.name}"):
                    self.s3.download_file(bucket, prefix + companion.name, str(companion))
            return self.ids_of(local, job)

    def operator_ids(self, job: str, zip_path: Path) -> set[str]:
        self.verify_zip(zip_path)  # before its client code runs here
        return self.ids_of(zip_path, job)

    # Waiting for the service.

    def _require(self, job: str, detail: dict[str, Any], status: str, doing: str) -> None:
        if detail["ApplicationStatus"] != status:
            raise JobControlError(f"cannot {doing} {job}: {detail['ApplicationName']} is "
                                  f"{detail['ApplicationStatus']}, not {status}; nothing changed")

    def _await_status(self, job: str, want: str, passing: set[str], failed_after: str | None = None) -> None:
        """Poll until `want`; a status outside `passing`, or a return to one after `failed_after`, fails."""
        seen: set[str] = set()

        def reached() -> bool:
            status = self._app(job)["ApplicationStatus"]
            seen.add(status)
            if status == want:
                return True
            if status not in passing or (failed_after in seen and status != failed_after):
                raise JobControlError(f"{self.settings.application(job)} went {status} instead of {want} "
                                      "(the service's log says why)")
            return False

        self._wait(f"{self.settings.application(job)} {want}", reached)

    def _wait(self, what: str, done: Callable[[], bool]) -> None:
        deadline, pause = time.monotonic() + self.timeout_s, 0.05
        while not done():
            if time.monotonic() > deadline:
                raise JobControlError(f"timed out after {self.timeout_s:.0f} s waiting for {what}")
            time.sleep(pause)
            pause = min(pause * 2, self.max_poll_s)


def _code_location(detail: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """(bucket, key, object version) of the application's S3 code, or None for inline code."""
    code = detail["ApplicationConfigurationDescription"]["ApplicationCodeConfigurationDescription"]
    s3 = code.get("CodeContentDescription", {}).get("S3ApplicationCodeLocationDescription")
    if not s3:
        return None
    return str(s3["BucketARN"]).rsplit(":", 1)[-1], str(s3["FileKey"]), s3.get("ObjectVersion")


def _require_snapshots(detail: dict[str, Any], consequence: str) -> None:
    described = detail["ApplicationConfigurationDescription"].get("ApplicationSnapshotConfigurationDescription", {})
    if not described.get("SnapshotsEnabled"):
        raise JobControlError(f"{detail['ApplicationName']} has snapshots disabled: {consequence}. Enable them "
                              "(UpdateApplication ApplicationSnapshotConfigurationUpdate)")


def _newest_ready(snapshots: list[dict[str, Any]]) -> str | None:
    ready = [s for s in snapshots if s["SnapshotStatus"] == "READY"]
    newest = max(ready, key=lambda s: (s["SnapshotCreationTimestamp"], s["SnapshotName"]), default=None)
    return str(newest["SnapshotName"]) if newest else None


def _refusal(what: str, err: ClientError) -> JobControlError:
    error = err.response.get("Error", {})
    return JobControlError(f"{what}: {error.get('Code', 'error')}: {error.get('Message', '')}")


@contextmanager
def _calling(what: str) -> Iterator[None]:
    """The service's refusals and unreachable endpoints as JobControlError, naming the call."""
    try:
        yield
    except ClientError as err:
        raise _refusal(what, err) from None
    except (BotoCoreError, Boto3Error) as err:  # Boto3Error: S3 transfers (S3UploadFailedError)
        raise JobControlError(f"{what}: {err}") from None
