"""The pure parts of `medistream dlq`: grouping by unit, ledger keys, replay targets, filters, arguments."""

from __future__ import annotations

from typing import Any

import pytest

from tools.cli import parser
from tools.dlq_replay import latest_ledger, replay_target
from tools.dlq_units import (
    DlqError,
    format_table,
    group_by_unit,
    matches,
    select,
    unit_pointer,
)

LANDING = "s3://medistream-landing/feeds/"


def letter(dlid: str, source: dict[str, Any], *, feed: str = "claims", stage: str = "schema",
           reason: str = "schema_violation", sha: str = "ab" * 32, at: int = 1_700_000_000_000) -> dict[str, Any]:
    """A dead letter as the job writes it (no payload)."""
    return {"dead_letter_id": dlid, "feed": feed, "stage": stage, "reason_code": reason, "detail": "$.x minLength",
            "record_id": None, "payload_sha256": sha, "payload_bytes": 10, "source": source, "failed_at_ms": at}


def kafka(offset: int, partition: int = 0, **extra: Any) -> dict[str, Any]:
    return {"kind": "kafka", "feed": "claims", "topic": "raw.claims", "partition": partition, "offset": offset, **extra}


def file(path: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "file", "feed": "claims", "path": path, **extra}


def test_ledger_key_is_the_unit_pointer_without_position() -> None:
    assert unit_pointer(kafka(7, 1)) == "kafka:raw.claims/1@7"
    assert unit_pointer(kafka(7, 1, position="record 3")) == "kafka:raw.claims/1@7"
    assert unit_pointer(file(LANDING + "claims/a.csv", position="row 3")) == f"file:{LANDING}claims/a.csv"
    # Offset 0 and partition 0 are real positions, not missing values.
    assert unit_pointer(kafka(0, 0)) == "kafka:raw.claims/0@0"
    assert unit_pointer({"kind": "kafka", "topic": "raw.claims", "partition": 0}) is None
    assert unit_pointer({"kind": "sftp", "path": "/x"}) is None


def test_dead_letters_of_one_unit_are_grouped_once_in_first_seen_order() -> None:
    letters = [
        letter("a", file(LANDING + "claims/x.csv", position="row 2")),
        letter("b", kafka(5)),
        letter("c", file(LANDING + "claims/x.csv", position="row 9")),
        letter("d", kafka(5, 1)),
        letter("e", {"kind": "kafka", "topic": "raw.claims"}),
    ]
    units = group_by_unit(letters)
    assert [u.pointer for u in units] == [f"file:{LANDING}claims/x.csv", "kafka:raw.claims/0@5",
                                          "kafka:raw.claims/1@5", "unknown:e"]
    assert [u.kind for u in units] == ["file", "kafka", "kafka", "unknown"]
    assert units[0].dead_letter_ids == ["a", "c"]
    assert "position" not in units[0].source
    assert units[0].digest != units[1].digest and len(units[0].digest) == 32


def test_only_whole_unit_dead_letters_give_the_digest_to_check() -> None:
    whole = letter("a", kafka(5), sha="11" * 32)
    inside = letter("b", kafka(5, position="record 2"), sha="22" * 32)
    (unit,) = group_by_unit([whole, inside])
    assert unit.whole_unit_digests == {"11" * 32}
    (records_only,) = group_by_unit([inside])
    assert records_only.whole_unit_digests == set()


def test_replay_target_keeps_feed_and_basename_in_a_folder_the_file_source_reads() -> None:
    path = LANDING + "claims/2026/01/02/batch-7.csv"
    first = replay_target(LANDING, path, "d" * 32, 1)
    assert first == f"{LANDING}claims/replay/{'d' * 32}/batch-7.csv"
    assert replay_target(LANDING, path, "d" * 32, 3) == f"{LANDING}claims/replay/{'d' * 32}-3/batch-7.csv"
    # Flink's FileSource skips any path segment starting with "_" or ".": the target must have none.
    assert not any(part.startswith(("_", ".")) for part in first.removeprefix("s3://").split("/"))
    assert replay_target(LANDING.rstrip("/"), path, "d" * 32, 1) == first
    assert replay_target(LANDING, "s3a://medistream-landing/feeds/claims/x.csv", "e" * 32, 1) == \
        f"{LANDING}claims/replay/{'e' * 32}/x.csv"


@pytest.mark.parametrize("path", [
    "s3://other-bucket/feeds/claims/x.csv",   # another bucket
    "s3://medistream-landing/elsewhere/x.csv",  # outside the prefix
    "s3://medistream-landing/feeds/x.csv",     # directly under the prefix: no feed folder
])
def test_files_outside_landing_feed_folders_have_no_replay_target(path: str) -> None:
    assert replay_target(LANDING, path, "d" * 32, 1) is None


def test_filters_by_feed_and_reason_code_or_stage_dot_code() -> None:
    x = letter("a", kafka(1), feed="claims", stage="decode", reason="malformed_json")
    assert matches(x, None, None)
    assert matches(x, "claims", "malformed_json") and matches(x, "claims", "decode.malformed_json")
    assert not matches(x, "payments", None)
    assert not matches(x, None, "schema_violation") and not matches(x, None, "schema.malformed_json")


def test_select_by_ids_requires_every_id_and_keeps_each_once() -> None:
    letters = [letter("a", kafka(1)), letter("b", kafka(2), feed="payments")]
    assert [x["dead_letter_id"] for x in select(letters, ["b", "a", "b"], None, None)] == ["b", "a"]
    assert [x["dead_letter_id"] for x in select(letters, [], "payments", None)] == ["b"]
    with pytest.raises(DlqError, match="no dead letter with id zz, yy"):
        select(letters, ["a", "zz", "yy"], None, None)


def test_newest_ledger_entry_per_unit_wins() -> None:
    entries = [{"unit": "kafka:raw.a/0@1", "attempt": 1}, {"unit": "file:s3://b/k", "attempt": 1},
               {"unit": "kafka:raw.a/0@1", "attempt": 2}, {"no": "unit"}]
    assert latest_ledger(entries) == {"kafka:raw.a/0@1": {"unit": "kafka:raw.a/0@1", "attempt": 2},
                                      "file:s3://b/k": {"unit": "file:s3://b/k", "attempt": 1}}


def test_list_lines_show_pointer_position_and_utc_time_but_not_the_detail() -> None:
    lines = format_table([letter("a" * 32, file(LANDING + "claims/x.csv", position="row 3")),
                          letter("b" * 32, kafka(12), stage="decode", reason="malformed_json")])
    assert lines[0].split() == ["a" * 32, "claims", "schema", "schema_violation", f"file:{LANDING}claims/x.csv",
                                "(row", "3)", "2023-11-14T22:13:20Z"]
    assert lines[1].split()[3:5] == ["malformed_json", "kafka:raw.claims/0@12"]
    assert all("minLength" not in line for line in lines)
    assert lines[0].index("schema") == lines[1].index("decode")  # aligned columns


OPERATOR = ["--actor", "ana", "--role", "operator", "--why", "contract fixed"]


def test_dlq_arguments() -> None:
    args = parser().parse_args(["dlq", "replay", "abc", "def", "--dry-run", *OPERATOR])
    assert (args.dlq_command, args.ids, args.dry_run, args.force, args.feed) == ("replay", ["abc", "def"], True,
                                                                                False, None)
    assert (args.actor, args.role, args.reason_text, args.partner) == ("ana", "operator", "contract fixed", None)
    args = parser().parse_args(["dlq", "list", "--feed", "claims", "--limit", "5", "--json"])
    assert (args.feed, args.limit, args.json, args.reason, args.partner) == ("claims", 5, True, None, None)
    assert parser().parse_args(["dlq", "list", "--partner"]).partner == "*"
    assert parser().parse_args(["dlq", "list", "--partner", "acme"]).partner == "acme"
    with pytest.raises(SystemExit):
        parser().parse_args(["dlq", "list", "--limit", "0"])
    with pytest.raises(SystemExit):
        parser().parse_args(["dlq", "show"])
    with pytest.raises(SystemExit):  # a replay is an operator action: who, in which role, and why
        parser().parse_args(["dlq", "replay", "abc", "--actor", "ana", "--role", "operator"])


@pytest.mark.parametrize(("argv", "message"), [
    (["dlq", "replay"], "replay takes dead-letter ids, or --feed F [--reason CODE] (ingest), or --partner P"),
    (["dlq", "replay", "abc", "--feed", "claims"], "replay takes dead-letter ids, or --feed F / --partner P"),
    (["dlq", "replay", "abc", "--reason", "malformed_json"], "replay takes dead-letter ids, or --feed F / --partner"),
    (["dlq", "replay", "--feed", "claims", "--partner", "acme"], "replay takes dead-letter ids, or --feed F [--reason"),
    (["dlq", "replay", "p" + "0" * 32, "a" * 32], "ids p...) and ingest ones in separate commands"),
])
def test_replay_needs_ids_or_one_filter(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tools.cli import main

    assert main([*argv, *OPERATOR]) == 1  # refused before any broker is contacted, nothing audited
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
