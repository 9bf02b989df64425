"""A STAND-IN for the Managed Service for Apache Flink API (kinesisanalyticsv2), local runs and tests only.

moto serves only Create/Describe/ListApplications and tags of this service; the operator commands need
start, stop, snapshots and updates with the service's state machine, so this stand-in serves them over
the real wire protocol (decision 0019). Run in-process (`running(config, runner)`,
`start_in_thread(config, runner)`) or as a process: `python -m infra.local.managed_flink --port N`.
It binds 127.0.0.1 only and keeps every application in memory.
"""

from infra.local.managed_flink.applications import Registry
from infra.local.managed_flink.errors import ApiError
from infra.local.managed_flink.runner import AppView, Delays, InMemoryRunner, Runner, RunnerCall, SnapshotRef
from infra.local.managed_flink.server import ManagedFlinkHandle, StandinConfig, build_app, running, start_in_thread

__all__ = [
    "ApiError", "AppView", "Delays", "InMemoryRunner", "ManagedFlinkHandle", "Registry", "Runner", "RunnerCall",
    "SnapshotRef", "StandinConfig", "build_app", "running", "start_in_thread",
]
