"""Scrape targets as Prometheus file_sd files: each process that serves metrics announces itself.

A process writes `<MEDISTREAM_HOME>/prometheus/targets/<component>-<pid>-<port>.json` when its endpoint
is up and removes it on a clean exit; Prometheus re-reads the folder, so its scrape config names no
port. A SIGKILLed process leaves its file behind, on purpose: its target turns `up == 0` and the
target-down alert fires. The next start of anything that announces prunes the files of processes
that are gone for longer than `keep_dead_s`, so the folder does not grow.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from connectors.properties import medistream_home, pid_alive

LOOPBACK = "127.0.0.1"


def targets_dir(home: Path | None = None) -> Path:
    """The folder Prometheus's file_sd reads (created on demand)."""
    return (home or medistream_home()) / "prometheus" / "targets"


def prune(folder: Path, keep_dead_s: float = 600.0) -> list[Path]:
    """Remove target files of processes that are gone and whose file is older than keep_dead_s."""
    removed = []
    now = time.time()
    for path in folder.glob("*.json") if folder.is_dir() else ():
        parts = path.stem.rsplit("-", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        if not pid_alive(int(parts[1])) and now - path.stat().st_mtime > keep_dead_s:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def announce(component: str, port: int, labels: dict[str, str] | None = None, folder: Path | None = None) -> Path:
    """Write this process's target file (atomically) and return its path; labels must be bounded names."""
    folder = folder or targets_dir()
    folder.mkdir(parents=True, exist_ok=True)
    prune(folder)
    path = folder / f"{component}-{os.getpid()}-{port}.json"
    tmp = folder / f".{path.name}.tmp"
    tmp.write_text(json.dumps([{"targets": [f"{LOOPBACK}:{port}"],
                                "labels": {"component": component, **(labels or {})}}]) + "\n")
    tmp.replace(path)
    return path
