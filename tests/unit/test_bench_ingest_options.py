"""bench.ingest_bench's options: refused before anything runs (the stack, the JVM) when they cannot work together."""

from __future__ import annotations

import pytest

from bench import ingest_bench


def test_process_mode_without_no_fraud_is_refused_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        ingest_bench.main(["--execution-mode", "process", "--records", "10"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--execution-mode process needs --no-fraud" in err and "decision 0051" in err


def test_an_unknown_mode_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ingest_bench.main(["--execution-mode", "fast"])
    assert "invalid choice: 'fast'" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["lots", "0m", "512", "-1g"])
def test_a_managed_memory_flink_cannot_read_is_refused_before_anything_runs(
        size: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        ingest_bench.main([f"--managed-memory={size}", "--records", "10"])
    assert exit_info.value.code == 2
    assert "--managed-memory takes a size such as 512m" in capsys.readouterr().err
