"""The reason-code taxonomy: every code a stage can raise is defined once, categorised and tested somewhere."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import udfs
import udfs.decoders
from udfs.reasons import CATEGORIES, REASONS

TESTS = Path(__file__).resolve().parent.parent


def load_every_stage() -> None:
    for package in (udfs, udfs.decoders):
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")


def test_every_reason_has_a_category_and_a_summary() -> None:
    load_every_stage()
    assert len(REASONS) > 40
    for code, reason in REASONS.items():
        assert reason.category in CATEGORIES, code
        assert code == code.lower() and " " not in code
        assert len(reason.summary) > 10, code


def test_every_reason_code_is_exercised_by_a_test() -> None:
    load_every_stage()
    # Test modules, and the corpus manifests whose cases they parametrize over.
    files = [*TESTS.rglob("test_*.py"), *(TESTS / "corpus").rglob("*.json")]
    corpus = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files if p.name != Path(__file__).name)
    untested = sorted(code for code in REASONS if f'"{code}"' not in corpus and f"'{code}'" not in corpus)
    assert untested == [], f"reason codes no test names: {untested}"
