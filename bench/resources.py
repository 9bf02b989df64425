"""What a benchmark run costs the machine: process-tree CPU seconds and peak RSS, plus machine facts.

The Flink mini-cluster runs in a JVM that PyFlink starts as a child of this Python process, and in
thread mode the Python operator runs inside that JVM; so "this process and its children" is the
whole job, and CPU seconds of that tree are the honest per-core denominator.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect, then freeze what is alive (a bench's generated input) until the block ends.

    Input that lives for the whole run, which no job's heap does, is otherwise rescanned by every full
    collection: that put ~120 µs on each decoded record's mean in `bench.stage_costs` and slowed the ingest
    bench's bare loop with the run's length (decision 0059). Unfrozen on the way out, so nothing stays
    frozen past the measure.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@dataclass
class TreeUsage:
    """CPU seconds (user + system) and peak RSS of the process tree over one sampled window."""

    cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    peak_child_rss_bytes: int = 0  # descendants only: the JVM, without this process's generated data
    samples: int = 0
    processes: set[int] = field(default_factory=set)
    # CPU seconds per thread name in the JVM children (Linux keeps 15 characters of a name; digits as #),
    # when the sampler was asked for them: where the JVM side's time goes (JIT, task threads, Kafka clients).
    jvm_threads: dict[str, float] = field(default_factory=dict)
    # The window as it went: (epoch seconds, tree CPU seconds so far) per sample, and with `jvm_threads`
    # (epoch seconds, {thread group: CPU seconds so far}) per thread sample: what `steady_window` reads.
    series: list[tuple[float, float]] = field(default_factory=list)
    thread_series: list[tuple[float, dict[str, float]]] = field(default_factory=list)


def thread_group(name: str) -> str:
    """A JVM thread's name as a group: numbers as #, so a pool's or a subtask's threads add up."""
    return re.sub(r"[0-9]+", "#", name)


def _thread_cpu(pid: int) -> dict[tuple[int, str], float]:
    """{(thread id, name): CPU seconds} of every thread of `pid`, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[tuple[int, str], float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                name = fh.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                stat = fh.read()
        except OSError:  # the thread ended between listing and reading
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[(int(tid), name)] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return out


class TreeSampler:
    """Samples this process and its descendants every `interval_s` seconds in a daemon thread.

    CPU is the difference of each process's cumulative CPU time between the window's start (0 for a
    process born inside it) and its last sample; a process that dies between samples loses at most
    one interval of CPU, which is why the window ends with a final sample. With `jvm_threads`, the
    same per thread of the JVM children, every third sample (a thread that ends loses up to that).
    """

    def __init__(self, interval_s: float = 0.2, jvm_threads: bool = False) -> None:
        self.interval_s = interval_s
        self.jvm_threads = jvm_threads
        self._thread_start: dict[tuple[int, int, str], float] = {}
        self._thread_last: dict[tuple[int, int, str], float] = {}
        self.usage = TreeUsage()
        self._root = psutil.Process()
        self._start_cpu: dict[int, float] = {}
        self._last_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return [self._root]

    def _sample(self, baseline: bool = False) -> None:
        rss = child_rss = 0
        # Threads every third sample: reading every thread's stat costs this process CPU, which is measured too.
        thread_turn = self.jvm_threads and (baseline or self.usage.samples % 3 == 0)
        for proc in self._tree():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    mem = proc.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                continue
            cpu = times.user + times.system
            if thread_turn and proc.pid != self._root.pid and _is_java(proc):
                for (tid, name), thread_cpu in _thread_cpu(proc.pid).items():
                    key = (proc.pid, tid, name)
                    if baseline:
                        self._thread_start[key] = thread_cpu
                    self._thread_last[key] = thread_cpu
            rss += mem
            child_rss += mem if proc.pid != self._root.pid else 0
            if baseline:
                self._start_cpu[proc.pid] = cpu
            else:
                self._start_cpu.setdefault(proc.pid, 0.0)
            self._last_cpu[proc.pid] = cpu
            self.usage.processes.add(proc.pid)
        self.usage.peak_rss_bytes = max(self.usage.peak_rss_bytes, rss)
        self.usage.peak_child_rss_bytes = max(self.usage.peak_child_rss_bytes, child_rss)
        self.usage.samples += 1
        now = time.time()
        self.usage.series.append((now, sum(self._last_cpu[pid] - self._start_cpu[pid] for pid in self._last_cpu)))
        if thread_turn:
            self.usage.thread_series.append((now, self._thread_groups()))

    def _thread_groups(self) -> dict[str, float]:
        """CPU seconds so far per thread group (thread_group) of the JVM children."""
        groups: dict[str, float] = {}
        for key, cpu in self._thread_last.items():
            group = thread_group(key[2])
            groups[group] = groups.get(group, 0.0) + cpu - self._thread_start.get(key, 0.0)
        return groups

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> TreeSampler:
        self._sample(baseline=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.usage.cpu_s = sum(self._last_cpu[pid] - self._start_cpu[pid] for pid in self._last_cpu)
        self.usage.jvm_threads = dict(sorted(self._thread_groups().items(), key=lambda item: -item[1]))


# The steady state: the records between these fractions of a run, past start-up (the mini-cluster, planning, the
# first checkpoints, most of the JIT's warm-up) and before the end (the last records, the final checkpoint).
STEADY_FROM, STEADY_TO = 0.2, 0.9


def _at(series: list[tuple[float, float]], when: float) -> float:
    """The cumulative value of `series` (time, value) at `when`, linear between samples, held at either end."""
    if when <= series[0][0]:
        return series[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(series):
        if when <= t1:
            return v0 + (v1 - v0) * (when - t0) / (t1 - t0) if t1 > t0 else v1
    return series[-1][1]


def steady_window(progress: list[tuple[float, int]], usage: TreeUsage, total: int,
                  lo: float = STEADY_FROM, hi: float = STEADY_TO) -> dict[str, Any] | None:
    """CPU and wall time per record between two progress points of a run: the steady state's cost.

    `progress` is (epoch seconds, records done by then) in time order: a job's Iceberg commits (the rows each
    snapshot holds, committed at a checkpoint), or a loop's own marks. The window runs from the first point with
    at least `lo` of `total` records done to the last with at most `hi`; the tree's CPU (and each JVM thread
    group's) at those two times is read off the sampler's series. None when no two points bound such a window.
    """
    start = next(((t, n) for t, n in progress if n >= lo * total), None)
    end = next(((t, n) for t, n in reversed(progress) if n <= hi * total), None)
    if start is None or end is None or end[1] <= start[1] or end[0] <= start[0] or len(usage.series) < 2:
        return None
    records, seconds = end[1] - start[1], end[0] - start[0]
    cpu_s = _at(usage.series, end[0]) - _at(usage.series, start[0])
    if cpu_s <= 0:  # a window shorter than the sampler's step reads no CPU: no figure, rather than a division by zero
        return None
    window: dict[str, Any] = {
        "from_records": start[1], "to_records": end[1], "records": records, "seconds": round(seconds, 3),
        "cpu_s": round(cpu_s, 3), "records_per_s": records / seconds, "records_per_cpu_s": records / cpu_s,
        "cpu_us_per_record": cpu_s / records * 1e6,
    }
    if len(usage.thread_series) >= 2:
        groups = {name for _t, by_group in usage.thread_series for name in by_group}
        curves = {name: [(t, by_group.get(name, 0.0)) for t, by_group in usage.thread_series] for name in groups}
        window["jvm_threads_cpu_us_per_record"] = us_per_record(
            {name: _at(curve, end[0]) - _at(curve, start[0]) for name, curve in curves.items()}, records)
    return window


def us_per_record(cpu_by_group: dict[str, float], records: int) -> dict[str, float]:
    """CPU seconds per thread group as µs per record, largest first, groups under 5 µs left out."""
    per_record = {name: cpu / records * 1e6 for name, cpu in cpu_by_group.items()}
    return {name: round(us, 1) for name, us in sorted(per_record.items(), key=lambda item: -item[1]) if us >= 5}


def _is_java(proc: psutil.Process) -> bool:
    try:
        return proc.name() == "java"
    except psutil.Error:
        return False


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _java_version() -> str:
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)  # noqa: S607
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unavailable ({type(err).__name__})"
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[0] if lines else "unknown"


def code_version() -> dict[str, Any]:
    """The commit measured and any uncommitted changes to the code that runs in the job."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)  # noqa: S607
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "udfs", "schemas", "jobs", "connectors", "infra/local/synthetic.py")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted": dirty.splitlines()}


def machine_info() -> dict[str, Any]:
    """Facts a reader needs to compare this run with another one."""
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.platform(),
        "python": sys.version.split()[0],
        "java": _java_version(),
        "apache_flink": metadata.version("apache-flink"),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
