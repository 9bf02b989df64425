"""The README's map of the code matches the tree: every module is on it, and everything on it exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Folders whose every module (and sub-package) the map names.
MAPPED = ("schemas", "udfs", "connectors", "jobs", "tools", "tools/checks", "infra", "infra/local", "bench")


def _map_rows() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Map of the code\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)/` \| (.*) \|$", section, flags=re.MULTILINE)
    return {folder: text for folder, text in rows}


def _named(text: str) -> set[str]:
    """Backticked names in a row (`ingest.py`, `phi/`, `x12*`), each cut to its last path part."""
    return {name.rstrip("/").rsplit("/", 1)[-1] for name in re.findall(r"`([A-Za-z0-9_.*/]+)`", text)}


def test_every_module_and_package_is_on_the_map() -> None:
    rows = _map_rows()
    missing = []
    for folder in MAPPED:
        top = folder.split("/", 1)[0]
        named = _named(rows[top])
        for path in sorted((ROOT / folder).iterdir()):
            if path.name.startswith((".", "__")) or (path.name == "results" and top == "bench"):
                continue
            is_package = path.is_dir() and (path / "__init__.py").exists()
            if (path.suffix == ".py" and path.stem not in named and path.name not in named) or (
                    is_package and path.name not in named):
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_every_file_the_map_names_exists() -> None:
    absent = []
    for folder, text in _map_rows().items():
        for name in re.findall(r"`([A-Za-z0-9_./]+\.py)`", text):
            if not any((ROOT / folder).rglob(name.rsplit("/", 1)[-1])):
                absent.append(f"{folder}/{name}")
    assert absent == []


def test_the_map_names_every_top_level_package() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name not in ("tests", "bench")}
    assert packages <= set(_map_rows())
