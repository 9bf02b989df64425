"""`./medistream test`'s runner (tools/test_run.py, decision 0056): its phases partition the suite, the first
group's phases really run side by side, and a failing phase fails the run with its output kept."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # nosec B405 - parses the JUnit XML pytest just wrote
from pathlib import Path

import pytest

from tools.test_run import PHASES, Phase, prune, run_phases

# Four tests, one per combination of the two marks. The fast one and the long one each wait until the other has
# started: they pass only when the two phases run at the same time. The exclusive one checks it runs alone.
SAMPLE = '''
import time
from pathlib import Path
import pytest

HERE = Path(__file__).parent


def _meet(mine, other):
    (HERE / mine).touch()
    deadline = time.monotonic() + 60
    while not (HERE / other).exists():
        assert time.monotonic() < deadline, f"{other} never started beside {mine}"
        time.sleep(0.05)


def test_fast():
    _meet("fast.started", "long.started")


@pytest.mark.long
def test_long():
    _meet("long.started", "fast.started")
    (HERE / "long.done").touch()


@pytest.mark.long
@pytest.mark.exclusive
def test_long_and_exclusive():
    assert (HERE / "long.done").exists()


@pytest.mark.exclusive
def test_exclusive_fails():
    assert False, "the exclusive phase's failure"
'''


def _cases(xml: Path) -> dict[str, str]:
    """Test name -> "passed" or "failed", from a phase's JUnit XML."""
    found = {}
    for case in ET.parse(xml).getroot().iter("testcase"):  # noqa: S314 # nosec B314 - our own pytest's file
        found[case.attrib["name"]] = "failed" if case.find("failure") is not None else "passed"
    return found


def test_the_phases_partition_the_suite_and_the_first_group_runs_side_by_side(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = tmp_path / "suite"
    tests.mkdir()
    (tests / "test_sample.py").write_text(SAMPLE)
    logs = tmp_path / "logs"
    logs.mkdir()
    groups = [[Phase(name, marks, logs, paths=(str(tests),)) for name, marks in group] for group in PHASES]

    assert run_phases(groups) == 1  # the exclusive phase failed

    ran = {phase.name: _cases(logs / f"{phase.name}.xml") for group in groups for phase in group}
    assert ran == {"fast": {"test_fast": "passed"},
                   "long": {"test_long": "passed"},
                   "exclusive": {"test_long_and_exclusive": "passed", "test_exclusive_fails": "failed"}}
    codes = {phase.name: phase.returncode for group in groups for phase in group}
    assert codes == {"fast": 0, "long": 0, "exclusive": 1}
    printed = capsys.readouterr().out
    assert "the exclusive phase's failure" in printed  # the failing phase's output is in the run's own
    assert "exclusive exit 1" in printed and "fast      exit 0" in printed


def test_prune_keeps_the_newest_runs(tmp_path: Path) -> None:
    for stamp in ("20261201T000000Z", "20261202T000000Z", "20261203T000000Z"):
        (tmp_path / stamp).mkdir()
        (tmp_path / stamp / "fast.log").write_text("x")
    prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20261202T000000Z", "20261203T000000Z"]
