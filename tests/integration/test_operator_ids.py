"""The ingest job's operator ids do not depend on its parallelism, so a savepoint restores at another one.

A savepoint keys state by operator id. An operator without a uid gets an id from the graph's shape,
which follows operator chaining, which follows parallelism: before decision 0020, 21 of the ingest
job's 58 operator ids changed between parallelism 1 and 2 (the dedup, the Iceberg committers, the
ingest operator, the sources), so a savepoint taken at one did not restore at the other (a rescale,
Managed Flink's autoscaling, `demo` after `demo --cluster`). The job is built, not run, at 1 and 2
(`python -m jobs.ingest --operator-ids`, each its own client JVM, as every submission is).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connectors.properties import REPO_ROOT
from infra.local.isolation import write_properties
from infra.local.settings import StackSettings

pytestmark = [pytest.mark.integration, pytest.mark.flink]

# PyFlink's key-by map before the dead letters' dedup: stateless, and it takes no uid. The fraud detectors' facts and
# the device events are keyed with no Python map (jobs.runtime.keyed_by_first_field), and the side outputs have none
# behind them (jobs.runtime.side_output, decision 0047; before it, four identity maps were listed here too).
STATELESS_WITHOUT_UID = ["_stream_key_by_map_operator"]


def described(properties: Path, parallelism: int, home: Path) -> dict[str, Any]:
    documents = json.loads(properties.read_text())
    for group in documents:
        if group["PropertyGroupId"] == "runtime":
            group["PropertyMap"]["parallelism"] = str(parallelism)
    at = home / f"p{parallelism}.json"
    at.write_text(json.dumps(documents))
    done = subprocess.run([sys.executable, "-m", "jobs.ingest", "--properties", str(at), "--operator-ids"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


def test_every_operator_keeps_its_id_from_parallelism_one_to_two(stack: StackSettings, tmp_path: Path) -> None:
    properties = write_properties(f"op{os.urandom(3).hex()}", tmp_path)
    one, two = described(properties, 1, tmp_path), described(properties, 2, tmp_path)
    assert two["without_uid"] == STATELESS_WITHOUT_UID
    assert len(one["operators"]) > 40  # every source, stage, dedup, writer and committer
    changed = {op: one["operators"][op] for op in sorted(set(one["operators"]) ^ set(two["operators"]))
               if op in one["operators"]}
    assert set(one["operators"]) == set(two["operators"]), f"ids that change with parallelism: {changed}"
