"""Unit tests for the local stack's settings and preflight errors; no server is started."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local import kafka, stack
from infra.local.process import (
    HealthTimeout,
    PidRecord,
    PortInUse,
    ToolMissing,
    command_line,
    ensure_port_free,
    exit_status,
    launch,
    owned_process,
    port_is_free,
    read_pid,
    start_ticks,
    stop,
    wait_until,
)
from infra.local.settings import REPO_ROOT, SettingsError, StackSettings


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A loopback port held by a listener that is not part of any stack."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_defaults() -> None:
    settings = StackSettings.from_env({})
    assert settings.home == REPO_ROOT / ".local"
    assert settings.bootstrap_servers() == "127.0.0.1:19092"
    assert settings.controller_endpoint() == "127.0.0.1:19093"
    assert settings.s3_endpoint() == "http://127.0.0.1:15000"
    assert settings.buckets() == (
        "medistream-landing",
        "medistream-warehouse",
        "medistream-archive",
        "medistream-reference",
    )
    assert settings.archive_kms_alias == "alias/medistream-archive"
    assert settings.iceberg_catalog_path == REPO_ROOT / ".local" / "iceberg" / "catalog.db"
    assert settings.warehouse_uri() == "s3://medistream-warehouse/"


def test_env_overrides(tmp_path: Path) -> None:
    settings = StackSettings.from_env(
        {
            "MEDISTREAM_HOME": str(tmp_path / "h"),
            "MEDISTREAM_KAFKA_PORT": "29092",
            "MEDISTREAM_MOTO_PORT": "25000",
        }
    )
    assert settings.home == tmp_path / "h"
    assert settings.bootstrap_servers() == "127.0.0.1:29092"
    assert settings.s3_endpoint() == "http://127.0.0.1:25000"
    assert settings.kafka_libs_dir == tmp_path / "h" / "kafka" / "libs"
    assert settings.iceberg_catalog_path == tmp_path / "h" / "iceberg" / "catalog.db"


def test_from_env_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDISTREAM_MOTO_PORT", "25001")
    assert StackSettings.from_env().moto_port == 25001


def test_settings_are_frozen() -> None:
    settings = StackSettings()
    with pytest.raises(AttributeError):
        settings.kafka_port = 1  # type: ignore[misc]


def test_non_integer_port_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="MEDISTREAM_KAFKA_PORT='abc'"):
        StackSettings.from_env({"MEDISTREAM_KAFKA_PORT": "abc"})


@pytest.mark.parametrize(
    "overrides",
    [{"kafka_port": 0}, {"moto_port": 70000}, {"kafka_port": 19093}, {"moto_port": 19092}],
)
def test_invalid_or_clashing_ports_rejected(overrides: dict[str, int]) -> None:
    with pytest.raises(SettingsError):
        StackSettings(**overrides)  # type: ignore[arg-type]


def test_port_taken_error_names_port_and_holder(listening_port: int) -> None:
    assert not port_is_free(listening_port)
    with pytest.raises(PortInUse) as err:
        ensure_port_free(listening_port, "kafka", "MEDISTREAM_KAFKA_PORT")
    message = str(err.value)
    assert f"127.0.0.1:{listening_port}" in message
    assert "MEDISTREAM_KAFKA_PORT" in message
    assert "pytest" in message or "python" in message  # the holder is this test process


def test_up_refuses_taken_port_before_starting_anything(
    tmp_path: Path, listening_port: int
) -> None:
    settings = StackSettings(home=tmp_path, kafka_port=listening_port)
    with pytest.raises(PortInUse, match=f"kafka: port 127.0.0.1:{listening_port}"):
        stack.up(settings)
    assert not list((tmp_path / "run").glob("*.pid"))
    assert not (tmp_path / "kafka" / "libs").exists()


def test_free_port_passes() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    ensure_port_free(free, "moto", "MEDISTREAM_MOTO_PORT")


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("garbage", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert kafka.parse_java_major(output) == major


def test_missing_java_is_a_clear_error() -> None:
    with pytest.raises(ToolMissing, match="not found on PATH.*Java 17"):
        kafka.require_java("no-such-java-binary")


def test_too_old_java_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'java version \"1.8.0_392\"' >&2\n")
    fake.chmod(0o755)
    with pytest.raises(ToolMissing, match="Java 8; Kafka .* needs Java 17"):
        kafka.require_java(str(fake))


def test_missing_mvn_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing, match="`mvn` not found"):
        kafka.install(StackSettings(home=tmp_path))


def test_process_that_dies_while_starting_reports_its_log(tmp_path: Path) -> None:
    log, pid_file = tmp_path / "x.log", tmp_path / "x.pid"
    argv = [sys.executable, "-c", "import sys; print('bind failed: synthetic'); sys.exit(3)"]
    launch(argv, log_file=log, pid_file=pid_file, marker="synthetic", cwd=tmp_path)
    with pytest.raises(
        HealthTimeout, match=r"(?s)demo exited while starting \(exit code 3\).*bind failed: synthetic"
    ):
        wait_until(lambda: False, component="demo", timeout_s=10, pid_file=pid_file, log_file=log)
    assert stop(pid_file) is None  # nothing of ours left to stop
    assert not pid_file.exists()


def test_a_process_stays_ours_when_the_wall_clock_moves_the_boot_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, pid_file = tmp_path / "x.log", tmp_path / "x.pid"
    launch([sys.executable, "-c", "import time; time.sleep(60)", "synthetic-sleeper"], log_file=log,
           pid_file=pid_file, marker="synthetic-sleeper", cwd=tmp_path)
    try:
        import psutil

        # psutil's create_time is start ticks + the boot time as the wall clock sees it now: step that clock.
        boot = psutil.boot_time()
        monkeypatch.setattr("psutil._pslinux.boot_time", lambda: boot + 1.0)
        record = read_pid(pid_file)
        assert record is not None
        assert abs(psutil.Process(record.pid).create_time() - record.create_time) >= 1.0
        assert owned_process(pid_file) is not None
    finally:
        assert stop(pid_file) is not None


def test_a_process_whose_exec_is_still_loading_is_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    # Until exec has laid out the new program's arguments /proc shows an empty command line, and Popen returns
    # before that: 49 of 50 reads of a java child taken right after it returned (289 of 300 for Alertmanager).
    # Read then, the process looked like someone else's. Here the first three reads come back empty.
    pid_file = tmp_path / "x.pid"
    launch([sys.executable, "-c", "import time; time.sleep(60)", "synthetic-loading"], log_file=tmp_path / "x.log",
           pid_file=pid_file, marker="synthetic-loading", cwd=tmp_path)
    real, reads = psutil.Process.cmdline, []

    def loading(proc: psutil.Process) -> list[str]:
        reads.append(proc.pid)
        return [] if len(reads) <= 3 else real(proc)

    try:
        monkeypatch.setattr(psutil.Process, "cmdline", loading)
        assert owned_process(pid_file) is not None
        assert len(reads) == 4
        monkeypatch.setattr(psutil.Process, "cmdline", lambda proc: [])
        assert command_line(psutil.Process(), settle_s=0.05) == ""  # a line that stays empty is given up on
    finally:
        monkeypatch.undo()
        assert stop(pid_file) is not None


def test_a_process_killed_while_starting_is_reported_with_its_signal(tmp_path: Path) -> None:
    log, pid_file = tmp_path / "x.log", tmp_path / "x.pid"
    script = "import os, signal; print('listening', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    launch([sys.executable, "-c", script, "synthetic"], log_file=log, pid_file=pid_file, marker="synthetic",
           cwd=tmp_path)
    with pytest.raises(HealthTimeout, match=r"(?s)demo exited while starting \(signal SIGKILL\).*listening"):
        wait_until(lambda: False, component="demo", timeout_s=10, pid_file=pid_file, log_file=log)
    assert stop(pid_file) is None


def test_a_process_that_exits_on_its_own_is_reaped_at_the_next_launch_and_its_code_kept(tmp_path: Path) -> None:
    import psutil

    first, second = tmp_path / "first.pid", tmp_path / "second.pid"
    launch([sys.executable, "-c", "import sys; sys.exit(3)", "synthetic-first"], log_file=tmp_path / "x.log",
           pid_file=first, marker="synthetic-first", cwd=tmp_path)
    record = read_pid(first)
    assert record is not None
    deadline = time.monotonic() + 30
    while psutil.Process(record.pid).status() != psutil.STATUS_ZOMBIE:  # exited, not reaped: ours to reap
        assert time.monotonic() < deadline
        time.sleep(0.05)
    launch([sys.executable, "-c", "import time; time.sleep(60)", "synthetic-second"], log_file=tmp_path / "x.log",
           pid_file=second, marker="synthetic-second", cwd=tmp_path)
    try:
        assert not psutil.pid_exists(record.pid) or psutil.Process(record.pid).status() != psutil.STATUS_ZOMBIE
        assert exit_status(first) == "exit code 3"
    finally:
        assert stop(second) is not None


def test_a_session_whose_leader_pid_went_to_another_process_is_not_swept(tmp_path: Path) -> None:
    from tools.cluster import _sweep_session

    pid_file = tmp_path / "x.pid"
    launch([sys.executable, "-c", "import time; time.sleep(60)", "synthetic-newcomer"], log_file=tmp_path / "x.log",
           pid_file=pid_file, marker="synthetic-newcomer", cwd=tmp_path)
    try:
        newcomer = read_pid(pid_file)
        assert newcomer is not None and newcomer.start_ticks is not None
        # A TaskManager that had this PID before (an earlier tick): the newcomer leads a session of that id.
        gone = PidRecord(newcomer.pid, 0.0, "synthetic-taskmanager", newcomer.start_ticks - 1)
        assert _sweep_session(gone) == []
        assert owned_process(pid_file) is not None
    finally:
        assert stop(pid_file) is not None


def test_the_sweep_returns_once_the_rest_of_the_session_is_no_longer_running(tmp_path: Path) -> None:
    """A leader's worker in its session, the leader gone: the sweep kills the worker and returns only when it is gone
    or a zombie (exited), so a scan right after finds nothing of the session running."""
    import psutil

    from tools.cluster import _sweep_session

    pid_file = tmp_path / "x.pid"
    worker = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              "time.sleep(60)")
    launch([sys.executable, "-c", worker, "synthetic-leader"], log_file=tmp_path / "x.log", pid_file=pid_file,
           marker="synthetic-leader", cwd=tmp_path)
    record = read_pid(pid_file)
    assert record is not None
    deadline = time.monotonic() + 10
    while len(psutil.Process(record.pid).children()) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    [child] = psutil.Process(record.pid).children()
    assert stop(pid_file) is not None  # the leader only; its worker lives on in the session
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    assert _sweep_session(record) == [child.pid]
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    import psutil

    pid_file, me = tmp_path / "x.pid", os.getpid()
    record = {"pid": me, "create_time": 0, "marker": psutil.Process(me).cmdline()[0], "start_ticks": start_ticks(me)}
    pid_file.write_text(json.dumps(record))
    assert owned_process(pid_file) is not None
    pid_file.write_text(json.dumps(record | {"start_ticks": start_ticks(me) - 1}))
    assert owned_process(pid_file) is None  # same PID, same command line, started at another tick


def test_a_process_that_dies_after_its_first_lines_reports_its_last_words(tmp_path: Path) -> None:
    log, pid_file = tmp_path / "x.log", tmp_path / "x.pid"
    script = "import sys, time; print('listening', flush=True); time.sleep(0.2); print('fatal: synthetic'); sys.exit(1)"
    launch([sys.executable, "-c", script], log_file=log, pid_file=pid_file, marker="synthetic", cwd=tmp_path)
    with pytest.raises(HealthTimeout, match=r"(?s)listening.*fatal: synthetic"):
        wait_until(lambda: False, component="demo", timeout_s=10, pid_file=pid_file, log_file=log)


def test_stop_ignores_a_pid_file_naming_someone_elses_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    # This test process is alive but its command line lacks the marker: never ours to kill.
    pid_file.write_text(f'{{"pid": {os.getpid()}, "create_time": 0, "marker": "kafka.Kafka"}}')
    assert stop(pid_file) is None
    assert not pid_file.exists()


def test_up_reports_missing_mvn_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    java = shutil.which("java")
    if java is None:
        pytest.fail("java is required on this machine (see the local stack's requirements)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(bin_dir))
    with socket.socket() as a, socket.socket() as b, socket.socket() as c:
        for sock in (a, b, c):
            sock.bind(("127.0.0.1", 0))
        ports = [sock.getsockname()[1] for sock in (a, b, c)]
    settings = StackSettings(
        home=tmp_path / "home",
        kafka_port=ports[0],
        kafka_controller_port=ports[1],
        moto_port=ports[2],
    )
    with pytest.raises(ToolMissing, match="`mvn` not found"):
        stack.up(settings)
    assert not list(settings.run_dir.glob("*.pid"))


def test_kraft_cluster_ids_never_start_with_a_dash() -> None:
    import base64

    from infra.local.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(5000)]  # a leading "-" has a 1-in-64 chance per raw draw
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)


def _component(name: str, healthy: bool = True) -> stack.ComponentStatus:
    return stack.ComponentStatus(name=name, endpoint=f"{name}://127.0.0.1", pid=1, healthy=healthy,
                                 log=Path(f"/logs/{name}.log"))


@pytest.mark.parametrize("operational, healthy", [(None, False), (False, False), (True, True)])
def test_the_operational_store_is_a_core_component(tmp_path: Path, operational: bool | None, healthy: bool) -> None:
    status = stack.StackStatus(home=tmp_path, kafka=_component("kafka"), moto=_component("moto"),
                               iceberg_catalog_dir=tmp_path, iceberg_catalog_dir_exists=True,
                               postgres=None if operational is None else _component("postgres", operational))
    assert status.healthy is healthy
    assert ("postgres" in status.as_dict() and status.as_dict()["postgres"] is not None) is (operational is not None)


def test_down_names_postgres_among_the_components_it_knows(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected prometheus, lineage, postgres, kafka and/or moto"):
        stack.down(StackSettings(home=tmp_path), components=("postgresql",))
