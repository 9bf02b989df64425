"""`medistream reveal`: authorized re-identification of fields of one archived record, audited.

Order of events, each failing closed:
1. find the record's sealed copy in the archive (feed partition, committed files only);
2. decide with the access rules (schemas/access/reidentification.yaml): role x purpose x record type x fields;
3. write the decision, granted or denied, to the hash-chained audit log; if that write fails,
   nothing is revealed;
4. only when granted: open the sealed copy through KMS (with its encryption context: feed, record
   id, purpose "archive") and print the requested fields.
The printed values are PHI by design: this is the one door to them, for a person with a purpose.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from connectors.audit import AuditEvent, AuditLog
from connectors.iceberg import split_s3_url
from connectors.kms import KmsDataKeys, aws_client
from connectors.properties import IngestConfig
from schemas.phi_access import AccessRules, load_access
from udfs.phi.envelope import DataKeyCache, unseal
from udfs.phi.errors import ProtectionError
from udfs.phi.protect import record_context
from udfs.phi.reidentify import decide, pick

EXIT_DENIED, EXIT_NOT_FOUND, EXIT_FAILED = 3, 4, 2


@dataclass(frozen=True)
class RevealRequest:
    """Who asks, why, and for what (paths only: the request holds no PHI)."""

    actor: str
    role: str
    purpose: str
    feed: str
    record_id: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class RevealResult:
    """The outcome; `values` is filled only when granted."""

    granted: bool
    reason: str
    values: dict[str, Any] = field(default_factory=dict, repr=False)


def find_archived(cfg: IngestConfig, feed: str, record_id: str) -> dict[str, Any] | None:
    """The committed archive row of a record (record_type, sealed, ...), or None."""
    import fastavro

    from connectors.s3 import s3_client

    bucket, prefix = split_s3_url(cfg.archive.path)
    s3 = s3_client(cfg.s3)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}feed={feed}/"):
        for obj in page.get("Contents", []):
            if not obj["Key"].rsplit("/", 1)[-1].startswith("part-"):  # in-progress files start with "."
                continue
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            for row in fastavro.reader(io.BytesIO(body)):
                if isinstance(row, dict) and row.get("record_id") == record_id:
                    return row
    return None


def reveal(cfg: IngestConfig, audit: AuditLog, request: RevealRequest, rules: AccessRules | None = None,
           keys: DataKeyCache | None = None) -> RevealResult:
    """Decide, audit, then (if granted) open the sealed copy and pick the fields."""
    row = find_archived(cfg, request.feed, request.record_id)
    if row is None:
        result = RevealResult(False, f"no archived record {request.record_id} in feed {request.feed}")
    else:
        decision = decide(rules or load_access(), request.role, request.purpose, row["record_type"], request.fields)
        result = RevealResult(decision.granted, decision.reason)
    # Audited before anything is shown; an audit failure raises and nothing is revealed.
    audit.append(AuditEvent(actor=request.actor, role=request.role, purpose=request.purpose, action="reveal",
                            decision="grant" if result.granted else "deny", feed=request.feed,
                            record_id=request.record_id, fields=request.fields, reason=result.reason))
    if not result.granted or row is None:
        return result
    cache = keys or DataKeyCache(KmsDataKeys(aws_client(cfg.phi, "kms"), cfg.phi.alias_prefix))
    record = json.loads(unseal(cache, row["sealed"], record_context(request.feed, request.record_id)))
    values: dict[str, Any] = {}
    for path in request.fields:
        try:
            values[path] = pick(record, path)
        except (KeyError, IndexError, TypeError):
            values[path] = None  # the field is absent from this record (optional, or no such element)
    return RevealResult(True, result.reason, values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Wire `reveal` into the `medistream` parser."""
    parser.add_argument("--actor", required=True, help="the person asking (a user name, not a shared account)")
    parser.add_argument("--role", required=True, help="a role of schemas/access/reidentification.yaml")
    parser.add_argument("--purpose", required=True, help="why, e.g. fraud_investigation")
    parser.add_argument("--feed", required=True)
    parser.add_argument("--record-id", required=True)
    parser.add_argument("--field", action="append", required=True, dest="fields",
                        help="a concrete field path, e.g. member.first_name or dependents[0].birth_date (repeat)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one reveal; exit 0 granted, 3 denied, 4 not found, 2 when keys or the audit log fail."""
    from connectors.audit import load_audit_settings, open_audit_log
    from connectors.properties import default_properties_path, load_ingest_config, read_property_groups

    out = out or sys.stdout
    groups = read_property_groups(default_properties_path())
    cfg = load_ingest_config(groups)
    request = RevealRequest(args.actor, args.role, args.purpose, args.feed, args.record_id, tuple(args.fields))
    try:
        result = reveal(cfg, open_audit_log(load_audit_settings(groups)), request)
    except ProtectionError as err:
        print(f"medistream reveal: {err}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as err:  # the audit log or the archive is unreachable: nothing was revealed
        print(f"medistream reveal: nothing revealed: {type(err).__name__}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps({"granted": result.granted, "reason": result.reason, "fields": result.values}), file=out)
    if result.granted:
        return 0
    return EXIT_NOT_FOUND if result.reason.startswith("no archived record") else EXIT_DENIED
