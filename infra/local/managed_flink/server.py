"""The Managed Flink stand-in's HTTP side: AWS JSON 1.1 on 127.0.0.1, in-process or on its own thread.

A STAND-IN for the kinesisanalyticsv2 API, for local runs and tests only; it binds the loopback interface
only and holds every application in memory. An unmodified `boto3.client("kinesisanalyticsv2",
endpoint_url=handle.url)` works against it: requests are `POST /` with `X-Amz-Target:
KinesisAnalytics_20180523.<Action>`, checked against botocore's model of the action (`wire.py`);
answers and errors are the service's shapes. The SigV4 header must be present; its signature is not
checked (no credentials exist here to check it against).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from infra.local.loopback_http import start_loopback
from infra.local.managed_flink.application import Operation
from infra.local.managed_flink.applications import Registry
from infra.local.managed_flink.errors import ApiError, unsupported
from infra.local.managed_flink.runner import Delays, InMemoryRunner, Runner, SnapshotRef
from infra.local.managed_flink.wire import check_request, is_operation, target_prefix

log = logging.getLogger("medistream.managed_flink")
CONTENT_TYPE = "application/x-amz-json-1.1"


@dataclass(frozen=True)
class StandinConfig:
    """Where the stand-in listens and which account and region its ARNs name."""

    port: int = 0  # 0: pick a free port
    region: str = "us-east-1"
    account: str = "123456789012"
    max_snapshots: int = 1000

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535 or self.max_snapshots < 1:
            raise ValueError("managed flink stand-in: port must be 0-65535 and max_snapshots >= 1")


class Driver:
    """Runs each operation's work on the runner, then ends its transition in the registry."""

    def __init__(self, registry: Registry, runner: Runner) -> None:
        self.registry, self.runner = registry, runner
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def launch(self, op: Operation) -> Operation:
        """Cancel what `op` supersedes and start its work; return it."""
        for op_id in op.cancels:
            task = self.tasks.pop(op_id, None)
            if task is not None:
                task.cancel()
        task = asyncio.get_running_loop().create_task(self._drive(op), name=f"{op.kind}-{op.app}-{op.id}")
        self.tasks[op.id] = task
        task.add_done_callback(lambda _: self.tasks.pop(op.id, None))
        return op

    async def _work(self, op: Operation) -> None:
        runner, registry = self.runner, self.registry
        taking = SnapshotRef(op.snapshot) if op.snapshot and op.kind in ("stop", "update", "snapshot") else None
        if op.kind == "start":
            await runner.start(op.view, op.restore, op.allow_non_restored_state)
        elif op.kind == "stop":
            registry.snapshot_taken(op, await runner.stop(op.view, taking, op.force), True)
        elif op.kind == "update" and op.before is not None:
            registry.snapshot_taken(op, await runner.stop(op.before, taking, False), True)
            await runner.start(op.view, registry.restore_after_stop(op), op.allow_non_restored_state)
        elif op.kind == "snapshot" and taking is not None:
            registry.snapshot_taken(op, await runner.snapshot(op.view, taking), True)
        elif op.kind == "delete_snapshot" and op.deleting is not None:
            await runner.delete_snapshot(op.view, op.deleting)
        elif op.kind == "delete":
            if op.before is not None:
                await runner.stop(op.before, None, True)
            for ref in self.registry.snapshot_refs(op.app):
                await runner.delete_snapshot(op.view, ref)

    async def _drive(self, op: Operation) -> None:
        ok = True
        try:
            await self._work(op)
        except asyncio.CancelledError:
            raise  # superseded (a forced stop): the registry already moved on
        except Exception as exc:
            ok = False
            log.warning("%s of %s failed: %s", op.kind, op.app, exc)
            self.registry.snapshot_taken(op, None, False)
        self.registry.finish(op, ok)
        log.info("%s %s of %s finished ok=%s", op.id, op.kind, op.app, ok)

    async def close(self) -> None:
        """Cancel every operation in flight and wait for them to end."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


Handler = Callable[[Registry, Driver, dict[str, Any]], dict[str, Any]]


def _describe(reg: Registry, _: Driver, b: dict[str, Any]) -> dict[str, Any]:
    return {"ApplicationDetail": reg.get(b["ApplicationName"]).detail()}


def _create(reg: Registry, _: Driver, b: dict[str, Any]) -> dict[str, Any]:
    return {"ApplicationDetail": reg.create(b).detail()}


def _list_applications(reg: Registry, _: Driver, b: dict[str, Any]) -> dict[str, Any]:
    apps, token = reg.listing(b.get("Limit", 50), b.get("NextToken"))
    return {"ApplicationSummaries": [a.summary() for a in apps], **({"NextToken": token} if token else {})}


def _delete(reg: Registry, drv: Driver, b: dict[str, Any]) -> dict[str, Any]:
    drv.launch(reg.delete(b["ApplicationName"], b["CreateTimestamp"]))
    return {}


def _start(reg: Registry, drv: Driver, b: dict[str, Any]) -> dict[str, Any]:
    return {"OperationId": drv.launch(reg.start(b["ApplicationName"], b.get("RunConfiguration"))).id}


def _stop(reg: Registry, drv: Driver, b: dict[str, Any]) -> dict[str, Any]:
    return {"OperationId": drv.launch(reg.stop(b["ApplicationName"], bool(b.get("Force")))).id}


def _update(reg: Registry, drv: Driver, b: dict[str, Any]) -> dict[str, Any]:
    op = reg.update(b)
    answer = {"ApplicationDetail": reg.get(b["ApplicationName"]).detail()}
    return {**answer, "OperationId": drv.launch(op).id} if op else answer


def _create_snapshot(reg: Registry, drv: Driver, b: dict[str, Any]) -> dict[str, Any]:
    drv.launch(reg.create_snapshot(b["ApplicationName"], b["SnapshotName"]))
    return {}


def _describe_snapshot(reg: Registry, _: Driver, b: dict[str, Any]) -> dict[str, Any]:
    return {"SnapshotDetails": reg.snapshot(b["ApplicationName"], b["SnapshotName"]).details()}


def _list_snapshots(reg: Registry, _: Driver, b: dict[str, Any]) -> dict[str, Any]:
    snaps, token = reg.list_snapshots(b["ApplicationName"], b.get("Limit", 50), b.get("NextToken"))
    return {"SnapshotSummaries": [s.details() for s in snaps], **({"NextToken": token} if token else {})}


def _delete_snapshot(reg: Registry, drv: Driver, b: dict[str, Any]) -> dict[str, Any]:
    drv.launch(reg.delete_snapshot(b["ApplicationName"], b["SnapshotName"], b["SnapshotCreationTimestamp"]))
    return {}


HANDLERS: dict[str, Handler] = {
    "CreateApplication": _create, "DescribeApplication": _describe, "ListApplications": _list_applications,
    "DeleteApplication": _delete, "StartApplication": _start, "StopApplication": _stop,
    "UpdateApplication": _update, "CreateApplicationSnapshot": _create_snapshot,
    "DescribeApplicationSnapshot": _describe_snapshot, "ListApplicationSnapshots": _list_snapshots,
    "DeleteApplicationSnapshot": _delete_snapshot,
}


def _answer(status: int, body: dict[str, Any], request_id: str, error: str | None = None) -> web.Response:
    headers = {"x-amzn-RequestId": request_id, **({"x-amzn-ErrorType": error} if error else {})}
    return web.Response(status=status, body=json.dumps(body), content_type=CONTENT_TYPE, headers=headers)


def _action(request: web.Request) -> str:
    target = request.headers.get("X-Amz-Target", "")
    prefix, _, action = target.partition(".")
    if prefix != target_prefix() or not is_operation(action):
        raise ApiError("UnknownOperationException", f"unknown X-Amz-Target {target!r}")
    if action not in HANDLERS:
        raise unsupported(f"the Managed Flink stand-in does not serve {action}")
    return action


async def _dispatch(request: web.Request) -> web.Response:
    request_id = str(uuid.uuid4())
    registry, driver = request.app[REGISTRY_KEY], request.app[DRIVER_KEY]
    try:
        if not request.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 "):
            raise ApiError("MissingAuthenticationTokenException", "Missing Authentication Token", 403)
        action = _action(request)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise ApiError("SerializationException", "the request body is not JSON") from None
        check_request(action, body)
        answer = HANDLERS[action](registry, driver, body)
    except ApiError as err:
        log.info("%s -> %s", request.headers.get("X-Amz-Target", "-"), err.code)
        return _answer(err.status, err.body(), request_id, err.code)
    log.info("%s -> 200", action)
    return _answer(200, answer, request_id)


REGISTRY_KEY = web.AppKey("registry", Registry)
DRIVER_KEY = web.AppKey("driver", Driver)


def build_app(config: StandinConfig, runner: Runner) -> web.Application:
    """The aiohttp application over a fresh registry; every action is `POST /`."""
    app = web.Application()
    registry = Registry(config.region, config.account, config.max_snapshots)
    app[REGISTRY_KEY], app[DRIVER_KEY] = registry, Driver(registry, runner)
    app.router.add_post("/", _dispatch)

    async def close_driver(a: web.Application) -> None:
        await a[DRIVER_KEY].close()

    app.on_shutdown.append(close_driver)
    return app


@asynccontextmanager
async def running(config: StandinConfig, runner: Runner) -> AsyncIterator[tuple[str, Registry]]:
    """Serve on the current event loop; yield the base URL and the registry; stop on exit."""
    site, url = await start_loopback(build_app(config, runner), config.port)
    try:
        yield url, site.app[REGISTRY_KEY]
    finally:
        await site.cleanup()


@dataclass
class ManagedFlinkHandle:
    """A stand-in serving from its own thread: `url` for boto3's endpoint_url, `stop()` to end it."""

    url: str
    registry: Registry  # owned by the server's thread: read it in tests, change it only through the API
    runner: Runner
    _site: web.AppRunner
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving (operations in flight are cancelled), end the loop and join its thread."""
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._site.cleanup(), self._loop).result(timeout_s)
        finally:
            _end_loop(self._loop, self._thread, timeout_s)


def _end_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread, timeout_s: float) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout_s)
    if not thread.is_alive():
        loop.close()


def start_in_thread(config: StandinConfig | None = None, runner: Runner | None = None,
                    timeout_s: float = 10.0) -> ManagedFlinkHandle:
    """Start the stand-in on a daemon thread with its own loop (default: in-memory runner, fast delays)."""
    config, runner = config or StandinConfig(), runner or InMemoryRunner(Delays.fast())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="managed-flink-standin", daemon=True)
    thread.start()
    try:
        site, url = asyncio.run_coroutine_threadsafe(start_loopback(build_app(config, runner), config.port),
                                                     loop).result(timeout_s)
    except BaseException:
        _end_loop(loop, thread, timeout_s)
        raise
    return ManagedFlinkHandle(url, site.app[REGISTRY_KEY], runner, site, loop, thread)
