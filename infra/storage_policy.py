"""Storage policy of the archive, declared once: encryption at rest, retention (object lock), lifecycle.

The infrastructure applies these (the AWS app from here; the local stack the parts a test run can
live with), so a change is a change to this file and nowhere else. HIPAA keeps records six years;
we keep seven, in S3 Object Lock compliance mode, which nobody (root included) can shorten or lift.
The archive stays hot (S3 Standard) for 30 days for replays and re-identification, then moves to
Glacier Instant Retrieval (millisecond reads, a fraction of the cost); it expires after retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ArchivePolicy:
    """Retention and lifecycle of the archive bucket."""

    retention_days: int = 7 * 365 + 2  # seven years, leap days included
    lock_mode: str = "COMPLIANCE"
    hot_days: int = 30
    cold_storage_class: str = "GLACIER_IR"
    noncurrent_expire_days: int = 30  # superseded versions (re-written part files never happen; markers do)


ARCHIVE = ArchivePolicy()


def encryption_configuration(kms_key_arn: str) -> dict[str, Any]:
    """PutBucketEncryption body: SSE-KMS with the archive CMK, bucket keys on (fewer KMS calls)."""
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_arn},
                       "BucketKeyEnabled": True}]}


def object_lock_configuration(policy: ArchivePolicy = ARCHIVE) -> dict[str, Any]:
    """PutObjectLockConfiguration body: default retention on every new object version."""
    return {"ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": policy.lock_mode, "Days": policy.retention_days}}}


def lifecycle_configuration(policy: ArchivePolicy = ARCHIVE) -> dict[str, Any]:
    """PutBucketLifecycleConfiguration body: hot, then cold, then expired once retention has passed."""
    return {"Rules": [{
        "ID": "archive-hot-cold-expire",
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "Transitions": [{"Days": policy.hot_days, "StorageClass": policy.cold_storage_class}],
        "Expiration": {"Days": policy.retention_days + 1},
        "NoncurrentVersionExpiration": {"NoncurrentDays": policy.noncurrent_expire_days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    }]}
