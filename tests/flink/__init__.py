"""Tests of PyFlink pieces on the mini-cluster, in thread mode as the jobs run them."""

from __future__ import annotations

import sys
from typing import Any


def thread_mode_env(settings: dict[str, str] | None = None) -> Any:
    """A streaming environment at parallelism 1 in thread mode, with the jobs' interpreter and dependencies jar, and
    these other Flink settings."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    from jobs.runtime import DEPENDENCIES_JAR

    conf = Configuration()
    conf.set_string("python.execution-mode", "thread")
    # The job's own interpreter, as every job sets it (jobs/runtime.py); unset, thread mode asks `python` on the
    # PATH where libpython is, and that answer depended on which test had started the gateway first.
    conf.set_string("python.executable", sys.executable)
    conf.set_string("pipeline.jars", DEPENDENCIES_JAR.as_uri())
    conf.set_string("pipeline.classpaths", DEPENDENCIES_JAR.as_uri())
    for key, value in (settings or {}).items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    return env
