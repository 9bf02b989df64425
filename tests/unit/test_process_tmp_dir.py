"""Flink's temporary files of an embedded run: one folder per process, and what dead runs left behind removed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.runtime import process_tmp_dir


def test_folders_of_gone_processes_and_old_leftovers_are_removed_live_ones_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDISTREAM_HOME", str(tmp_path))
    root = tmp_path / "tmp"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for name in (gone, str(live.pid), "minicluster_old", "minicluster_young", "pytest-of-ci"):
            (root / name / "blobs").mkdir(parents=True)
        hour_ago = time.time() - 7200
        for old in ("minicluster_old", "pytest-of-ci"):  # a test session in its second hour keeps its folders
            os.utime(root / old, (hour_ago, hour_ago))

        mine = process_tmp_dir(max_age_s=3600)

        assert mine == root / str(os.getpid()) and mine.is_dir()
        assert sorted(p.name for p in root.iterdir()) == sorted([str(live.pid), "minicluster_young", "pytest-of-ci",
                                                                 mine.name])
    finally:
        live.kill()
        live.wait()
