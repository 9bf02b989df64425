"""Fresh imports for thread-mode PyFlink functions, on every task attempt (top-level on purpose; decision 0025).

Flink extracts a job's Python files (the zip's pyFiles: our code and the third-party packages) into a
new `python-dist-<uuid>` folder for each task attempt and deletes it when the attempt ends. In thread
mode the Python interpreter is pemja's, one per TaskManager process, and so is `sys.modules`. After a
failover on a TaskManager that survived, the modules the first attempt imported still point at its
deleted folder: importing a module of a package imported then fails (`No module named
'connectors.s3'`, measured on the local cluster, the job then restarting forever), and files read next
to a module (botocore's service models) are gone. A new version started on the same TaskManagers (an
upgrade on a session cluster) would run the previous version's modules. apache/flink-agents#941 met
the same and refreshes the import state before loading user code.

A function class that inherits `FreshImports` is pickled as a call to `rebuild` with its state as bytes,
so unpickling it first calls `refresh` (drop every module and path entry whose files are gone), then
imports its class, then its state, from the current attempt's folder. This module is top-level, not in
one of our packages, because a package of ours may itself be the stale one: a top-level module is found
on the current `sys.path`, or is already loaded and needs nothing from disk.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def _gone(module: object) -> bool:
    file = getattr(module, "__file__", None)
    if file:
        return not os.path.exists(file)
    paths = list(getattr(module, "__path__", None) or [])
    return bool(paths) and not any(os.path.isdir(p) for p in paths)


def refresh() -> list[str]:
    """Forget the modules, path entries and importer caches whose files are gone; the modules dropped."""
    sys.path[:] = [p for p in sys.path if not p or os.path.exists(p)]
    for entry in [e for e in sys.path_importer_cache if e and not os.path.exists(e)]:
        del sys.path_importer_cache[entry]
    stale = sorted(name for name, module in list(sys.modules.items()) if module is not None and _gone(module))
    for name in stale:
        del sys.modules[name]
    importlib.invalidate_caches()
    return stale


def rebuild(module: str, qualname: str, state: bytes) -> Any:
    """Unpickle a FreshImports function: refresh, import its class from the current folder, restore its state."""
    import cloudpickle

    refresh()
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    function = target.__new__(target)
    function.__dict__.update(cloudpickle.loads(state))
    return function


class FreshImports:
    """Mixin for the Python functions of a thread-mode job: unpickled through `rebuild` (see above)."""

    def __reduce__(self) -> tuple[Any, tuple[str, str, bytes]]:
        import cloudpickle

        module = type(self).__module__
        if module == "__main__":  # `python -m jobs.ingest`: the worker imports it by its real name
            spec = getattr(sys.modules["__main__"], "__spec__", None)
            if spec is None:
                raise TypeError(f"{type(self).__qualname__} is defined in a script run by path: it cannot be "
                                "imported by a task; run it with `python -m`")
            module = spec.name
        return rebuild, (module, type(self).__qualname__, cloudpickle.dumps(self.__dict__))
