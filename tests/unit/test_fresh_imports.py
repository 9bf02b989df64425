"""fresh_imports: a function unpickled after its python-dist folder was replaced imports from the new folder."""

from __future__ import annotations

import pickle
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fresh_imports import refresh

PACKAGE = "medistream_fresh_probe"
CODE = textwrap.dedent('''
    from fresh_imports import FreshImports

    class Probe(FreshImports):
        def __init__(self, setting):
            self.setting = setting

        def lazily(self):
            from medistream_fresh_probe import later  # imported by the task, not when unpickled
            return later.VERSION
''')


def _dist(root: Path, version: str) -> Path:
    """A python-dist folder as Flink extracts one: the package, with a module only a task imports later."""
    folder = root / f"python-dist-{version}"
    (folder / PACKAGE).mkdir(parents=True)
    (folder / PACKAGE / "__init__.py").write_text("")
    (folder / PACKAGE / "probe.py").write_text(CODE)
    (folder / PACKAGE / "later.py").write_text(f"VERSION = {version!r}\n")
    return folder


@pytest.fixture
def isolated_imports() -> Iterator[None]:
    path = sys.path[:]
    yield
    sys.path[:] = path
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


def test_a_function_unpickled_after_its_folder_was_replaced_imports_from_the_new_one(
        tmp_path: Path, isolated_imports: None) -> None:
    first = _dist(tmp_path, "1")
    sys.path.insert(0, str(first))
    from medistream_fresh_probe.probe import Probe  # the first attempt imports the package, not `later`

    data = pickle.dumps(Probe({"ttl_ms": 5}))
    shutil.rmtree(first)  # the attempt ends: Flink deletes its folder; sys.modules keeps the package
    second = _dist(tmp_path, "2")
    sys.path.insert(0, str(second))  # the next attempt's folder

    restored = pickle.loads(data)  # noqa: S301 - bytes this test pickled itself, as Flink unpickles its own
    assert restored.setting == {"ttl_ms": 5}
    assert restored.lazily() == "2"  # imported from the current folder, not the deleted one
    assert str(second) in sys.modules[PACKAGE].__file__
    assert str(first) not in sys.path


def test_without_the_refresh_the_stale_package_cannot_import_what_it_had_not_yet(
        tmp_path: Path, isolated_imports: None) -> None:
    """What the job met on the cluster before: `No module named 'connectors.s3'` after a failover."""
    first = _dist(tmp_path, "1")
    sys.path.insert(0, str(first))
    import medistream_fresh_probe  # noqa: F401

    shutil.rmtree(first)
    sys.path.insert(0, str(_dist(tmp_path, "2")))
    with pytest.raises(ModuleNotFoundError):
        __import__(f"{PACKAGE}.later")
    assert PACKAGE in refresh() and __import__(f"{PACKAGE}.later", fromlist=["VERSION"]).VERSION == "2"


def test_a_function_of_a_module_run_with_python_m_is_rebuilt_from_its_real_name(
        tmp_path: Path, isolated_imports: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m jobs.ingest` makes jobs/ingest.py `__main__`; a task's `__main__` is another module."""
    import importlib.machinery
    import types

    sys.path.insert(0, str(_dist(tmp_path, "1")))
    from medistream_fresh_probe.probe import Probe

    main = types.ModuleType("__main__")
    main.__spec__ = importlib.machinery.ModuleSpec(f"{PACKAGE}.probe", None)
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(Probe, "__module__", "__main__")
    data = pickle.dumps(Probe({"ttl_ms": 7}))
    monkeypatch.setattr(Probe, "__module__", f"{PACKAGE}.probe")
    restored = pickle.loads(data)  # noqa: S301 - bytes this test pickled itself
    assert type(restored).__module__ == f"{PACKAGE}.probe" and restored.setting == {"ttl_ms": 7}
