"""PyFlink's loopback worker pool (process-mode Python functions on the mini-cluster run in the job's own process
through it) listens on 127.0.0.1 only, once per process, however many environments start it (jobs/runtime.py)."""

from __future__ import annotations

import psutil

from jobs.runtime import serve_python_workers_on_loopback


def _listening() -> set[tuple[str, int]]:
    # gRPC may bind an IPv6 socket to the IPv4-mapped loopback (::ffff:127.0.0.1): loopback all the same.
    return {(c.laddr.ip.removeprefix("::ffff:"), c.laddr.port) for c in psutil.Process().net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN}


def test_the_worker_pool_listens_once_on_loopback_only() -> None:
    from pyflink.fn_execution.beam.beam_worker_pool_service import BeamFnLoopbackWorkerPoolServicer

    before = _listening()
    serve_python_workers_on_loopback()
    serve_python_workers_on_loopback()  # idempotent
    first = BeamFnLoopbackWorkerPoolServicer().start()  # what the DataStream environment's _open calls
    second = BeamFnLoopbackWorkerPoolServicer().start()  # and the table environment's: __init__ forgets the first
    assert first == second and first.startswith("127.0.0.1:")
    opened = _listening() - before
    assert opened == {("127.0.0.1", int(first.rsplit(":", 1)[1]))}
