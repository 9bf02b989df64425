"""PyFlink's loopback worker pool (process-mode Python functions on the mini-cluster run in the job's own process
through it) listens on 127.0.0.1 only, once per process, however many environments start it (jobs/runtime.py).

The check runs in a fresh interpreter: the pool is one per process, so in the suite's own process an earlier
test's environment may have started it already (CI's run of the whole suite did)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import json
    import psutil
    from jobs.runtime import serve_python_workers_on_loopback
    from pyflink.fn_execution.beam.beam_worker_pool_service import BeamFnLoopbackWorkerPoolServicer

    def listening():
        # gRPC may bind an IPv6 socket to the IPv4-mapped loopback (::ffff:127.0.0.1): loopback all the same.
        return {(c.laddr.ip.removeprefix("::ffff:"), c.laddr.port)
                for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}

    before = listening()
    serve_python_workers_on_loopback()
    serve_python_workers_on_loopback()  # idempotent
    first = BeamFnLoopbackWorkerPoolServicer().start()  # what the DataStream environment's _open calls
    second = BeamFnLoopbackWorkerPoolServicer().start()  # and the table environment's: __init__ forgets the first
    print(json.dumps({"first": first, "second": second, "opened": sorted(listening() - before)}))
""")


def test_the_worker_pool_listens_once_on_loopback_only() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["first"] == seen["second"] and seen["first"].startswith("127.0.0.1:")
    assert seen["opened"] == [["127.0.0.1", int(seen["first"].rsplit(":", 1)[1])]]
