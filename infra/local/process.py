"""Background processes of the local stack: ports, PID files, start, stop and log tails."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from infra.local.settings import LOOPBACK


class StackError(RuntimeError):
    """The local stack cannot be brought up or down; the message says what to fix."""


class PortInUse(StackError):
    """A port the stack needs is held by a process that the stack did not start."""


class ToolMissing(StackError):
    """A required executable (java, mvn) is missing or too old."""


class HealthTimeout(StackError):
    """A component did not become healthy in time (or exited while starting)."""


@dataclass(frozen=True)
class PidRecord:
    """What `up` wrote about a process it started, enough to recognise it again later."""

    pid: int
    create_time: float
    marker: str
    start_ticks: int | None = None  # None in PID files written before it was recorded


def port_owner(port: int) -> str:
    """Describe the process listening on a loopback port, best effort ('unknown' if hidden)."""
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return "unknown process"
    for conn in conns:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            if conn.pid is None:
                return "unknown process"
            try:
                cmd = " ".join(psutil.Process(conn.pid).cmdline())[:160]
            except psutil.Error:
                cmd = "?"
            return f"pid {conn.pid} ({cmd})"
    return "unknown process"


def port_is_free(port: int) -> bool:
    """True if nothing is bound to 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR mirrors what Kafka and werkzeug do, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_loopback_port(attempts: int = 50) -> int:
    """A port on 127.0.0.1 that nothing holds now (the kernel's pick, re-checked with port_is_free)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port_is_free(port):
            return port
    raise StackError("no free loopback port")


def port_accepts(port: int, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    # A connect, unlike a bind, cannot steal the port from a server that is starting up.
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def ensure_port_free(port: int, component: str, setting: str) -> None:
    """Raise PortInUse naming the holder if 127.0.0.1:port cannot be bound."""
    if not port_is_free(port):
        raise PortInUse(
            f"{component}: port {LOOPBACK}:{port} ({setting}) is already in use by "
            f"{port_owner(port)}, which the medistream stack did not start. Stop it, or choose "
            f"another port via the environment (see infra/local/settings.py)."
        )


def start_ticks(pid: int) -> int:
    """When a process started, in clock ticks since boot (field 22 of /proc/<pid>/stat).

    A process's identity, with its PID. Unlike psutil's create_time, which adds the boot time as the
    wall clock sees it now, it does not move when the clock is stepped or slewed.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        raise psutil.NoSuchProcess(pid) from None
    # The command name (field 2) may hold spaces and parentheses: count from its closing one.
    return int(stat.rsplit(b")", 1)[1].split()[19])


def write_pid(pid_file: Path, proc: psutil.Process, marker: str) -> None:
    """Record a started process so `down` can find and verify it."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": proc.pid, "create_time": proc.create_time(), "start_ticks": start_ticks(proc.pid),
              "marker": marker}
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(pid_file)


def read_pid(pid_file: Path) -> PidRecord | None:
    """Read a PID file; None if it is missing or unreadable."""
    try:
        data = json.loads(pid_file.read_text())
        ticks = data.get("start_ticks")
        return PidRecord(int(data["pid"]), float(data["create_time"]), str(data["marker"]),
                         None if ticks is None else int(ticks))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# How long a live process may show an empty command line: /proc shows none while an exec loads its program.
EXEC_SETTLE_S = 5.0


def owned_process(pid_file: Path) -> psutil.Process | None:
    """The live process a PID file names, if it is still the one we started; else None."""
    record = read_pid(pid_file)
    if record is None:
        return None
    try:
        proc = psutil.Process(record.pid)
        # The start time guards against PID reuse; the marker guards against a different program.
        if record.start_ticks is not None:
            same = start_ticks(record.pid) == record.start_ticks
        else:
            same = abs(proc.create_time() - record.create_time) < 1.0
        alive = proc.status() != psutil.STATUS_ZOMBIE
        matches = same and alive and record.marker in command_line(proc)
    except psutil.Error:
        return None
    return proc if matches else None


def command_line(proc: psutil.Process, settle_s: float = EXEC_SETTLE_S) -> str:
    """A live process's command line, waiting out an exec in progress.

    From the moment exec's point of no return closes the parent's pipe (Popen returns) until the kernel has
    laid out the new program's arguments, /proc/<pid>/cmdline reads empty: 2.8 ms median for Debian's
    Alertmanager here, 289 of 300 reads taken right after Popen returned, longer on a busy machine. Read
    then, a process we just started looked like someone else's, and a starting Alertmanager that went on
    to listen was reported as "exited while starting" (two CI runs). Zombies, whose line stays empty, are
    not waited for.
    """
    deadline = time.monotonic() + settle_s
    while True:
        line = " ".join(proc.cmdline())
        if line or time.monotonic() > deadline or proc.status() == psutil.STATUS_ZOMBIE:
            return line
        time.sleep(0.005)


# What this interpreter launched, by PID: how one that exited ended (code or signal), for the error message.
_LAUNCHED: dict[int, subprocess.Popen[bytes]] = {}


def launch(
    argv: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path,
    marker: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> psutil.Process:
    """Start argv detached in its own session, output appended to log_file, and record its PID."""
    if marker not in " ".join(argv):
        raise ValueError(
            f"marker {marker!r} must appear in the command line so `down` can verify it"
        )
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI exiting; Ctrl-C in the shell does not hit it
            close_fds=True,
        )
    proc = psutil.Process(popen.pid)
    write_pid(pid_file, proc, marker)
    for child in _LAUNCHED.values():
        child.poll()  # reaps those that exited on their own (kept, they would stay zombies); their codes stay
    _LAUNCHED[popen.pid] = popen
    return proc


def exit_status(pid_file: Path) -> str:
    """How the process a PID file names ended, when this interpreter launched it: "exit code 3", "signal SIGKILL"."""
    record = read_pid(pid_file)
    popen = _LAUNCHED.get(record.pid) if record is not None else None
    code = popen.poll() if popen is not None else None
    if code is None:
        return "exit status unknown"
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def stop(pid_file: Path, *, term_timeout_s: float = 30.0) -> int | None:
    """Stop the process a PID file names if it is ours (SIGTERM, then SIGKILL); remove the file."""
    record, proc = read_pid(pid_file), owned_process(pid_file)
    stopped: int | None = None
    if proc is not None:
        stopped = proc.pid
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=term_timeout_s)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
    launched = _LAUNCHED.pop(record.pid, None) if record is not None else None
    if launched is not None:
        launched.poll()  # reaps it if it is our child and gone (a zombie until then)
    pid_file.unlink(missing_ok=True)
    return stopped


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    probe: Callable[[], bool],
    *,
    component: str,
    timeout_s: float,
    pid_file: Path,
    log_file: Path,
    interval_s: float = 0.5,
) -> float:
    """Poll probe until True; return seconds taken. Fail fast if the process exits."""
    start = time.monotonic()
    while True:
        if probe():
            return time.monotonic() - start
        if owned_process(pid_file) is None:
            # Its last words may still be on their way to the log (children, slow disks, a loaded
            # machine): wait until the log has stopped growing for a moment, so the error shows why it died.
            settle, last = time.monotonic() + 3.0, _size(log_file)
            while time.monotonic() < settle:
                time.sleep(0.3)
                size = _size(log_file)
                if size == last and size > 0:
                    break
                last = size
            raise HealthTimeout(
                f"{component} exited while starting ({exit_status(pid_file)}); last lines of {log_file}:\n"
                f"{tail(log_file)}"
            )
        if time.monotonic() - start > timeout_s:
            raise HealthTimeout(
                f"{component} not healthy after {timeout_s:.0f}s; last lines of {log_file}:\n"
                f"{tail(log_file)}"
            )
        time.sleep(interval_s)
