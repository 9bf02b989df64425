"""`medistream dlq list|show|replay`: read committed dead letters and replay their source units.

Two kinds of dead letters: the ingest job's (`kafka.dlq.topic`; ids of 32 hex characters) and the
partner delivery job's (`partners.dlq.topic`; ids "p" + 32 hex; `--partner P`, or "*" for every
partner). Partner dead letters are replayed by re-delivering their curated record under the same
idempotency key, each once (tools/dlq_partner.py, decision 0023); the rest of this text is about
the ingest job's.

`list` and `show` only read. `replay` is an operator action: it takes --actor, --role and --reason,
is checked against schemas/access/operations.yaml (action `replay`) and audited in the hash-chained
audit log before it writes anything (tools.job_control.authorize), and audited again with its result.
The selection is resolved (read-only) before that, so the audit event names how many dead letters
it covers, and an unknown id is refused before anything is written.

A *unit* is what the job reads in one go: one Kafka message on raw.<feed>, or one landed file under
the landing prefix. A unit may hold many records (CSV rows, X12 claims), so several dead letters can
point at the same unit (`source.position` says where inside it). Replay works on units, each once.

Replay re-injects units after an operator fixed a contract, so the running job reads them again:
- Kafka: the exact message is fetched (assign + seek to its topic/partition/offset), checked against
  the dead letter's SHA-256 when that dead letter is for the whole unit (no `position`), and produced
  again to the same topic and partition with its key and headers, plus `medistream-replay-of: <ids>`.
  A message the topic's retention has dropped is reported as not replayable.
- File: the object is copied to `<landing>/<feed>/replay/<unit digest>/<basename>`. Not `_replay`:
  Flink's FileSource skips every path whose name starts with "_" or ".", folders included, so the
  job would never read a file under `_replay/`.

Guarantees:
- Every replayed unit is recorded in the ledger, a compacted topic (`kafka.dlq.replays.topic`,
  default medistream.dlq.replays) keyed by the unit pointer. A unit found there is skipped unless
  --force. A Kafka unit's new message and its ledger entry are written in one Kafka transaction
  (the job reads raw topics read_committed), so a crash leaves both or neither. A file is copied
  first and recorded second; its target key is fixed per unit and attempt, so a copy whose ledger
  entry was lost is found and never written twice. --force makes a new attempt (`<digest>-<n>`).
- Replaying a whole unit is safe: the records of it that were accepted the first time are exact
  re-sends, which the job's dedup stage drops (it keeps the first record per business key and
  content hash for its state TTL: replay within it); the rest are checked again and, if still
  wrong, dead-lettered again with new ids (their pointer is the new message or file).
- Dead letters are PHI-free by construction and hold no payload; this command keeps it that way:
  payload bytes are only hashed and moved, never printed.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import orjson

from connectors.properties import default_properties_path, read_property_groups
from tools.dlq_units import (
    NOT_REPLAYABLE,
    REPLAYED,
    SKIPPED,
    WOULD_REPLAY,
    DlqConfig,
    DlqError,
    Letter,
    Unit,
    format_table,
    group_by_unit,
    is_partner_id,
    load_config,
    matches,
    read_dead_letters,
    select,
)

# Command line -------------------------------------------------------------------------------------

def _list(cfg: DlqConfig, args: argparse.Namespace, out: TextIO) -> int:
    from tools.dlq_partner import format_partner_table, matches_partner

    partner = args.partner is not None
    if partner:
        letters = [x for x in read_dead_letters(cfg, partner=True) if matches_partner(x, args.partner, args.reason)
                   and matches(x, args.feed, None)]
    else:
        letters = [x for x in read_dead_letters(cfg) if matches(x, args.feed, args.reason)]
    letters = letters[-args.limit:] if args.limit else letters
    if args.json:
        out.writelines(orjson.dumps(letter).decode() + "\n" for letter in letters)
    else:
        out.writelines(line + "\n" for line in (format_partner_table if partner else format_table)(letters))
        out.write(f"{len(letters)} dead letter(s) on {cfg.partner_dlq_topic if partner else cfg.dlq_topic}\n")
    return 0


def _show(cfg: DlqConfig, args: argparse.Namespace, out: TextIO) -> int:
    partner = is_partner_id(args.id)
    (letter,) = _select(cfg, partner, [args.id], None, None, None)
    out.write(orjson.dumps(letter, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _select(cfg: DlqConfig, partner: bool, ids: list[str], partner_name: str | None, feed: str | None,
            reason: str | None) -> list[Letter]:
    topic = cfg.partner_dlq_topic if partner else cfg.dlq_topic
    try:
        if not partner:
            return select(read_dead_letters(cfg), ids, feed, reason)
        from tools.dlq_partner import matches_partner

        chosen = select(read_dead_letters(cfg, partner=True), ids, None, None)
        return [x for x in chosen if ids or matches_partner(x, partner_name, reason)]
    except DlqError as err:
        raise DlqError(f"{err} on {topic}" if str(err).startswith("no dead letter") else str(err)) from None


def replay(cfg: DlqConfig, args: argparse.Namespace, out: TextIO) -> int:
    """`dlq replay`: select, authorize and audit, replay, audit the result (the ops console calls this too)."""
    from tools.job_control import Operator, authorize

    kinds = {is_partner_id(i) for i in args.ids}
    if len(kinds) > 1:
        raise DlqError("replay partner dead letters (ids p...) and ingest ones in separate commands")
    if args.ids and (args.feed or args.partner or args.reason):
        raise DlqError("replay takes dead-letter ids, or --feed F / --partner P [--reason CODE], not both")
    if not args.ids and bool(args.feed) == bool(args.partner):
        raise DlqError("replay takes dead-letter ids, or --feed F [--reason CODE] (ingest), or --partner P "
                       "[--reason CODE] (partner delivery)")
    partner = bool(args.partner) or kinds == {True}
    try:
        letters = _select(cfg, partner, args.ids, args.partner, args.feed, args.reason)
    except DlqError as err:
        if not str(err).startswith("no dead letter"):
            raise
        raise DlqError(f"{err}: nothing was replayed, nothing changed") from None
    units: list[Unit]
    if partner:
        from tools.dlq_partner import partner_units

        units = partner_units(letters)
        partners = sorted({str(u.source["partner"]) for u in units})
        what = f"dlq replay of {len(letters)} partner dead letter(s) ({', '.join(partners) or 'none'})"
    else:
        units = group_by_unit(letters)
        what = f"dlq replay of {len(units)} unit(s) from {len(letters)} ingest dead letter(s)"
    what += " [dry run]" if args.dry_run else " [--force]" if args.force else ""
    operator = Operator(args.actor, args.role, args.reason_text)
    authorize(operator, "replay", None, what)  # audited first; refused (and audited) without the role
    from tools.dlq_replay import replay_units

    outcomes = replay_units(cfg, units, force=args.force, dry_run=args.dry_run)
    for o in outcomes:
        out.write(f"{o.status:<15} {o.unit.pointer}  {o.note}  ({len(o.unit.letters)} dead letter(s))\n")
    count = {s: sum(o.status == s for o in outcomes) for s in (REPLAYED, WOULD_REPLAY, SKIPPED, NOT_REPLAYABLE)}
    done = f"{count[WOULD_REPLAY]} would be replayed" if args.dry_run else f"{count[REPLAYED]} replayed"
    skipped = "skipped" if partner else "skipped (already replayed)"
    summary = (f"{len(units)} unit(s) from {len(letters)} dead letter(s): {done}, {count[SKIPPED]} {skipped}, "
               f"{count[NOT_REPLAYABLE]} not replayable")
    out.write(f"{'dry run, nothing written: ' if args.dry_run else ''}{summary}\n")
    authorize(operator, "replay", None, f"{what} done: {done}, {count[SKIPPED]} skipped, "
                                        f"{count[NOT_REPLAYABLE]} not replayable")
    return 1 if count[NOT_REPLAYABLE] else 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Wire `dlq list|show|replay` into the `medistream` parser."""
    sub = parser.add_subparsers(dest="dlq_command", required=True)
    ls = sub.add_parser("list", help="committed dead letters, newest last (never a payload)")
    ls.add_argument("--feed")
    ls.add_argument("--partner", nargs="?", const="*", metavar="P",
                    help="the partner delivery job's dead letters (for P; alone: every partner's)")
    ls.add_argument("--reason", help="reason code, or stage.reason_code")
    ls.add_argument("--limit", type=_positive, help="only the newest N")
    ls.add_argument("--json", action="store_true", help="one JSON dead letter per line")
    show = sub.add_parser("show", help="one dead letter as JSON (ids p...: a partner dead letter)")
    show.add_argument("id")
    rp = sub.add_parser("replay", help="re-inject the source units of dead letters, or re-deliver partner dead "
                                       "letters; audited, by role (exit 1 if any is not replayable)")
    rp.add_argument("ids", nargs="*", metavar="ID")
    rp.add_argument("--actor", required=True, help="who runs it (audited)")
    rp.add_argument("--role", required=True, help="a role of schemas/access/operations.yaml with `replay`")
    rp.add_argument("--why", dest="reason_text", required=True, metavar="TEXT", help="why (audited; no PHI)")
    rp.add_argument("--feed")
    rp.add_argument("--partner", metavar="P", help="the partner delivery job's dead letters for partner P")
    rp.add_argument("--reason", help="with --feed or --partner: reason code, or stage.reason_code")
    rp.add_argument("--dry-run", action="store_true", help="print what would be replayed, write nothing")
    rp.add_argument("--force", action="store_true", help="replay units the ledger says were replayed already")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one dlq sub-command; operator-facing failures print one line to stderr and return 1."""
    from botocore.exceptions import BotoCoreError, ClientError
    from confluent_kafka import KafkaException

    from connectors.properties import local_aws_environment
    from tools.job_interface import JobControlError

    local_aws_environment()
    cfg = load_config(read_property_groups(default_properties_path()))
    command = {"list": _list, "show": _show, "replay": replay}[args.dlq_command]
    try:
        return command(cfg, args, out or sys.stdout)
    except (DlqError, JobControlError) as err:
        message = str(err)
    except (KafkaException, ConnectionError) as err:
        message = f"Kafka at {cfg.bootstrap_servers}: {err}"
    except (BotoCoreError, ClientError) as err:
        message = f"S3 at {cfg.s3.endpoint or 'AWS'}: {err}"
    print(f"medistream dlq: {message}", file=sys.stderr)
    return 1
