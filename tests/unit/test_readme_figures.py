"""Every measured figure in the README names its recorded result under bench/results/.

A figure is a number followed by a unit of measurement (records/s, ms, µs, MiB, GiB, "s per", %,
...). A README section (the text between two headings) that holds one must name a
`bench/results/` file, and every such file the README names must exist. Settings and test
parameters written with the same units (a 32 MiB spool, a 5 % fault rate) are listed exactly in
SETTINGS: they are inputs, not results.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

_NUMBER = r"(?<![\w.])~?\d(?:[\d,.]*\d)?"
FIGURE = re.compile(
    _NUMBER + r"\s?(?:"
    r"k/s|(?:records|rec|rows|deliveries|files|writes|requests|pairs)/s|MB/s"
    r"|ms\b|µs\b|MiB\b|GiB\b|s per\b|%"
    r")"
)
RESULT_FILE = re.compile(r"bench/results/[\w.\-]*\w")

# Inputs written with a unit, not measurements: contract limits, fault rates, sizes of test data.
SETTINGS = (
    "2 % exact re-sends",
    "3 % invalid",
    "98 % of the rate",
    "up to 32 MiB",
    "above 32 MiB",
    "15 files of 1 MiB",
    "at 120 ms per page with 5 % 503s",
    "5 % 503s, 3 % held responses and 5 % deterministic 422s",
)


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) for each part of the text between headings; fenced code blocks are dropped."""
    found: list[tuple[str, str]] = []
    heading, fenced = "(top)", False
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("#"):
            found.append((heading, "\n".join(body)))
            heading, body = line.lstrip("#").strip(), []
        else:
            body.append(line)
    found.append((heading, "\n".join(body)))
    return found


def figures(body: str) -> list[str]:
    """The measured figures in a section's prose and tables (not in `code`, not in SETTINGS)."""
    prose = re.sub(r"`[^`]*`", " ", " ".join(body.split()))
    for setting in SETTINGS:
        prose = prose.replace(setting, " ")
    return [m.group(0) for m in FIGURE.finditer(prose)]


def unbacked(text: str) -> dict[str, list[str]]:
    """Heading -> figures, for each section holding figures but naming no bench/results/ file."""
    return {heading: found for heading, body in sections(text)
            if (found := figures(body)) and not RESULT_FILE.search(body)}


def test_every_section_with_a_measured_figure_names_its_result_file() -> None:
    assert unbacked(README.read_text(encoding="utf-8")) == {}


def test_every_result_file_the_readme_names_exists() -> None:
    named = set(RESULT_FILE.findall(README.read_text(encoding="utf-8")))
    assert named, "the README names no recorded result"
    assert sorted(p for p in named if not (ROOT / p).is_file()) == []


def test_every_listed_setting_is_still_in_the_readme() -> None:
    prose = " ".join(README.read_text(encoding="utf-8").split())
    assert [setting for setting in SETTINGS if setting not in prose] == []


def test_a_figure_without_a_result_file_is_found() -> None:
    text = "## Ingest\n\nThe job drains 12,000 records/s.\n\n## Next\n\nNo figure here.\n"
    assert unbacked(text) == {"Ingest": ["12,000 records/s"]}
    backed = text.replace("records/s.", "records/s (`bench/results/ingest-2026-12-04.json`).")
    assert unbacked(backed) == {}


def test_units_and_settings_are_told_apart() -> None:
    body = ("P95 9.2 ms, 8.7 µs, peak 5,159 MiB, 4 GiB, 15.7 %, 0.5 s per pass, ~3.4k/s, 42.1 MB/s; "
            "a spool of up to 32 MiB, `latency_p50_ms`, checkpoints every 5 s, version 2.2.1")
    assert figures(body) == ["9.2 ms", "8.7 µs", "5,159 MiB", "4 GiB", "15.7 %", "0.5 s per", "~3.4k/s",
                             "42.1 MB/s"]
    code = "## Run\n\n```bash\n# 400 records/s\n```\n"
    assert unbacked(code) == {}
