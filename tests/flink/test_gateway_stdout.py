"""`medistream jobs` prints its JSON answer on stdout; the PyFlink JVM it starts to read savepoints writes its console
log elsewhere (tools.savepoints.start_gateway_quietly): a JVM that prints to its stdout prints to our stderr."""

from __future__ import annotations

import subprocess
import sys

from connectors.properties import REPO_ROOT

PROGRAM = """
from jobs.runtime import prepare_process_environment
from tools.savepoints import start_gateway_quietly
prepare_process_environment()
start_gateway_quietly()
from pyflink.java_gateway import get_gateway
get_gateway().jvm.System.out.println("from-the-jvm")
get_gateway().jvm.System.out.flush()
print('{"answer": 1}')
"""


def test_the_jvms_console_output_goes_to_stderr_and_stdout_holds_only_our_answer() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == '{"answer": 1}\n'
    assert "from-the-jvm" in done.stderr
