"""`medistream audit verify|list|head|watch`: check and read the hash-chained audit log on DynamoDB.

The table and chain come from the `audit` property group (`table`, default medistream-audit;
`chain`, default medistream); DynamoDB is reached at `audit.endpoint`, else the `s3` group's
endpoint (the local moto server serves both; empty means AWS), in `audit.region`, else `s3.region`.

This command only reads (dynamodb:Query): it never creates the table or writes an entry, so it runs
under the same read-and-append-only role as the jobs. Entries hold no PHI (field paths, never
values), so printing them is safe.

Exit codes: 0 the chain verifies (or the read succeeded), 1 verification found a problem, 2 the log
could not be read (missing table, unreachable endpoint, bad anchor).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import asdict
from typing import Any, TextIO

import orjson

from connectors.audit import AuditLog, load_audit_settings, open_audit_log
from connectors.properties import default_properties_path, read_property_groups

_ANCHOR = re.compile(r"(\d+):([0-9a-f]{64})")


def parse_anchor(text: str) -> tuple[int, str]:
    """SEQ:HASH (as printed by `audit head`) -> (seq, hash)."""
    match = _ANCHOR.fullmatch(text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not SEQ:HASH (a seq and 64 hex digits)")
    return int(match.group(1)), match.group(2)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode() + "\n"


def _verify(log: AuditLog, args: argparse.Namespace, out: TextIO) -> int:
    result = log.verify(anchor=args.anchor)
    out.write(_json(asdict(result)))
    return 0 if result.ok else 1


def _list(log: AuditLog, args: argparse.Namespace, out: TextIO) -> int:
    entries = log.tail(args.last) if args.last else log.entries()
    out.writelines(_json(entry) for entry in entries)
    return 0


def _head(log: AuditLog, args: argparse.Namespace, out: TextIO) -> int:
    seq, digest = log.head()
    out.write(_json({"seq": seq, "hash": digest, "anchor": f"{seq}:{digest}"}))
    return 0


def _watch(log: AuditLog, args: argparse.Namespace, out: TextIO) -> int:
    """Verify every --interval seconds until SIGTERM, serving the verdict on 127.0.0.1 for Prometheus.

    medistream_audit_chain_ok (1 intact, 0 broken: the AuditChainBroken alert), _entries, and
    _last_verified_timestamp_seconds (AuditVerificationStale when it stops moving); a read that fails
    counts in medistream_audit_verify_errors_total and leaves the last verdict standing.
    """
    import signal
    import threading

    from botocore.exceptions import BotoCoreError, ClientError
    from prometheus_client import Counter, Gauge

    from connectors.metrics.doors import MetricsEndpoint

    endpoint = MetricsEndpoint("audit_verify")
    r = endpoint.registry
    ok = Gauge("medistream_audit_chain_ok", "1 when the whole hash chain verified, 0 when it did not", registry=r)
    entries = Gauge("medistream_audit_chain_entries", "Entries the last verification read", registry=r)
    verified_at = Gauge("medistream_audit_last_verified_timestamp_seconds", "When the chain last verified",
                        registry=r)
    errors = Counter("medistream_audit_verify_errors", "Verifications that could not read the log", registry=r)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    endpoint.serve()
    try:
        while not stop.is_set():
            try:
                result = log.verify(anchor=args.anchor)
            except (ClientError, BotoCoreError):
                errors.inc()
            else:
                ok.set(1 if result.ok else 0)
                entries.set(result.entries)
                if result.ok:
                    verified_at.set_to_current_time()
                out.write(_json(asdict(result)))
                out.flush()
            stop.wait(args.interval)
    finally:
        endpoint.close()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Wire `audit verify|list|head|watch` into the `medistream` parser."""
    sub = parser.add_subparsers(dest="audit_command", required=True)
    verify = sub.add_parser("verify", help="recompute the whole chain; exit 0 if intact, 1 if not, 2 if unreadable")
    verify.add_argument("--anchor", type=parse_anchor, metavar="SEQ:HASH",
                        help="a head recorded earlier with `audit head`: also detects removed newest entries")
    ls = sub.add_parser("list", help="entries in seq order, one JSON object per line (no PHI)")
    ls.add_argument("--last", type=_positive, metavar="N", help="only the newest N")
    sub.add_parser("head", help="seq and hash of the newest entry, to anchor outside the table")
    watch = sub.add_parser("watch", help="verify every --interval seconds, serving the verdict to Prometheus "
                                         "on 127.0.0.1 (the audit alerts)")
    watch.add_argument("--interval", type=_positive, default=300, metavar="S", help="seconds between checks (300)")
    watch.add_argument("--anchor", type=parse_anchor, metavar="SEQ:HASH", help="as for verify")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one audit sub-command; a log that cannot be read prints one line to stderr and returns 2."""
    from botocore.exceptions import BotoCoreError, ClientError

    from connectors.properties import local_aws_environment

    local_aws_environment()
    cfg = load_audit_settings(read_property_groups(default_properties_path()))
    command = {"verify": _verify, "list": _list, "head": _head, "watch": _watch}[args.audit_command]
    where = f"DynamoDB table {cfg.audit.table} at {cfg.endpoint or 'AWS'} ({cfg.region})"
    try:
        return command(open_audit_log(cfg), args, out or sys.stdout)
    except ClientError as err:
        error = err.response.get("Error", {})
        message = (f"{where} does not exist" if error.get("Code") == "ResourceNotFoundException"
                   else f"{where}: {error.get('Code')}: {error.get('Message')}")
    except BotoCoreError as err:
        message = f"{where}: {err}"
    print(f"medistream audit: {message}", file=sys.stderr)
    return 2
