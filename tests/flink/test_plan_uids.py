"""jobs.plan_uids.keep_uids_without: a table branch unioned into the SQL plan leaves the other SQL uids as they were.

Two small jobs of the ingest job's shape are built in thread mode (not run), each in a client JVM of its own as every
submission is (the planner's counter runs on within one JVM): a DataStream operator's table, deduplicated in SQL and
written to two sinks; the second job unions in the table of another DataStream operator. The planner
numbers its operators one after the other, so without keep_uids_without the dedup and the sinks of the second job get
other uids than the first's, and a savepoint of the first would not restore into it (decision 0049).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from connectors.properties import REPO_ROOT
from tests.flink import thread_mode_env

pytestmark = pytest.mark.flink

FIELDS = ["id", "dedup_key", "body"]


def _job(branch: bool, keep: bool) -> dict[str, str]:
    """Build the job (with the unioned branch or without) and return its SQL operators' {uid: name}."""
    from pyflink.common import Row, Types
    from pyflink.table import Schema, StreamTableEnvironment

    from jobs.plan_uids import keep_uids_without
    from jobs.runtime import STABLE_UID_TABLE_KEYS, operator_ids

    env = thread_mode_env()
    t_env = StreamTableEnvironment.create(env)
    for key, value in STABLE_UID_TABLE_KEYS.items():
        t_env.get_config().set(key, value)
    row_type = Types.ROW_NAMED(FIELDS, [Types.STRING()] * 3)
    with_time = Schema.new_builder().column_by_expression("proc_time", "PROCTIME()").build()

    def converted(uid: str) -> Any:
        stream = (env.from_collection([Row(f"{uid}-1", "k1", "x")], type_info=row_type)
                  .map(lambda row: row, output_type=row_type).uid(uid).name(uid))
        return t_env.from_data_stream(stream, with_time)

    t_env.create_temporary_view("records", converted("records"))
    if branch:
        t_env.create_temporary_view("events", converted("events"))
        t_env.create_temporary_view("accepted", t_env.sql_query(
            "SELECT * FROM records UNION ALL SELECT * FROM events"))
    else:
        t_env.create_temporary_view("accepted", t_env.from_path("records"))
    t_env.create_temporary_view("deduped", t_env.sql_query(
        """SELECT id, dedup_key, body FROM (
             SELECT *, ROW_NUMBER() OVER (PARTITION BY dedup_key ORDER BY proc_time ASC) AS rn FROM accepted)
           WHERE rn = 1"""))
    statements = t_env.create_statement_set()
    for sink in ("sink_a", "sink_b"):
        t_env.execute_sql(f"CREATE TEMPORARY TABLE {sink} (id STRING, body STRING) WITH ('connector' = 'blackhole')")
        insert = f"INSERT INTO {sink} SELECT id, UPPER(body) FROM deduped WHERE dedup_key <> '{sink}'"  # noqa: S608
        statements.add_insert_sql(insert)
    statements.attach_as_datastream()
    if keep:
        keep_uids_without(env, ("events",))
    return {uid: name for uid, name in operator_ids(env)["uids"].items() if uid not in ("records", "events")}


def _built(branch: bool, keep: bool) -> dict[str, str]:
    """_job in a process (and client JVM) of its own."""
    done = subprocess.run([sys.executable, "-m", "tests.flink.test_plan_uids", str(branch), str(keep)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.splitlines()[-1]))


def test_the_branch_leaves_every_other_sql_uid_as_it_was(flink_process_env: None) -> None:
    before = _built(branch=False, keep=False)
    after = _built(branch=True, keep=True)
    assert any("deduplicate" in uid for uid in before)
    assert sum(uid.endswith("_sink") for uid in before) == 2
    assert {uid for uid in after if uid not in before} == {"events-table-0_source", "events-table-1_calc"}
    assert set(before) <= set(after)


def test_without_it_the_dedup_and_the_sinks_are_renumbered(flink_process_env: None) -> None:
    """The control: what keep_uids_without mends."""
    before = _built(branch=False, keep=False)
    renumbered = _built(branch=True, keep=False)
    assert set(before) & set(renumbered)  # the operators before the union keep theirs
    lost = {uid for uid in before if uid not in renumbered}
    assert any("deduplicate" in uid for uid in lost)
    assert sum(uid.endswith("_sink") for uid in lost) == 2


def test_a_branch_no_sql_operator_reads_is_refused(flink_process_env: None) -> None:
    from pyflink.common import Types

    from jobs.plan_uids import PlanLayoutError, keep_uids_without

    env = thread_mode_env()
    env.from_collection(["a"], type_info=Types.STRING()).map(lambda value: value).uid("lonely").print()
    with pytest.raises(PlanLayoutError, match="no SQL operator reads the DataStream operator 'lonely'"):
        keep_uids_without(env, ("lonely",))


if __name__ == "__main__":
    from jobs.runtime import prepare_process_environment

    prepare_process_environment()
    print(json.dumps(_job(*(flag == "True" for flag in sys.argv[1:3]))))
