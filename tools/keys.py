"""`medistream keys`: rotate token keys and domain CMKs without downtime, crypto-shred a CMK; all audited.

- `rotate-tokens`: a new token key version becomes current; running jobs pick it up when they next
  open (restart or rescale); every held version still verifies tokens.
- `rotate-domain DOMAIN`: the domain's alias moves to a new CMK; new data keys come from it, data
  keys wrapped by the old CMK still open (the old CMK stays enabled).
- `shred KEY_ARN --confirm`: disable the CMK now and schedule its deletion; every data key it wrapped,
  and every ciphertext under those, becomes unreadable (crypto-shredding). Running jobs' caches hold
  plaintext data keys for at most phi.data.key.max.age.s.
"""

from __future__ import annotations

import argparse
import json
import sys

from connectors.audit import AuditEvent
from connectors.kms import aws_client, rotate_domain_key, rotate_token_key, shred_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Wire `keys rotate-tokens|rotate-domain|shred` into the `medistream` parser."""
    parser.add_argument("--actor", required=True, help="the person acting (recorded in the audit log)")
    sub = parser.add_subparsers(dest="keys_command", required=True)
    sub.add_parser("rotate-tokens", help="add a token key version and make it current")
    domain = sub.add_parser("rotate-domain", help="point a data domain's alias at a new CMK")
    domain.add_argument("domain")
    shred = sub.add_parser("shred", help="disable a CMK and schedule its deletion (irreversible after the window)")
    shred.add_argument("key_arn")
    shred.add_argument("--confirm", action="store_true", required=True)
    shred.add_argument("--pending-days", type=int, default=7)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run one key operation and audit it (the audit write comes first: no record, no operation)."""
    from connectors.audit import load_audit_settings, open_audit_log
    from connectors.properties import default_properties_path, load_phi_config, read_property_groups

    groups = read_property_groups(default_properties_path())
    phi = load_phi_config(groups)
    kms, audit = aws_client(phi, "kms"), open_audit_log(load_audit_settings(groups))
    command = args.keys_command
    target = {"rotate-tokens": phi.token_secret, "rotate-domain": getattr(args, "domain", ""),
              "shred": getattr(args, "key_arn", "")}[command]
    audit.append(AuditEvent(actor=args.actor, role="key_admin", purpose="key_management",
                            action=command.replace("-", "_"), decision="grant", feed=None, record_id=None,
                            fields=(), reason=f"{command} {target}"))
    if command == "rotate-tokens":
        result: dict[str, object] = {"token_key_version": rotate_token_key(aws_client(phi, "secretsmanager"), kms,
                                                                           phi.alias_prefix, phi.token_secret)}
    elif command == "rotate-domain":
        old, new = rotate_domain_key(kms, phi.alias_prefix, args.domain)
        result = {"domain": args.domain, "previous_cmk": old, "current_cmk": new}
    else:
        result = {"shredded": args.key_arn, "deletion_date": shred_key(kms, args.key_arn, args.pending_days)}
    print(json.dumps(result), file=sys.stdout)
    return 0
