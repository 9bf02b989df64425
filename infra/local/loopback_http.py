"""aiohttp stand-ins served on 127.0.0.1 only (the partner delivery and the pull API stand-ins)."""

from __future__ import annotations

import asyncio
import os
import signal

from aiohttp import web

from infra.local.settings import LOOPBACK


async def start_loopback(app: web.Application, port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve `app` on 127.0.0.1:`port` (0: a free port) on the running loop; return the runner and base URL.

    A short shutdown grace: requests a stand-in holds on purpose are cancelled on stop instead of delaying it.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, port).start()
    host, bound = runner.addresses[0][:2]
    return runner, f"http://{host}:{bound}"


_WATCHERS: set[asyncio.Task[None]] = set()


def stop_signal() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT, or once the process that started this one is gone: a test runner
    killed mid-run leaves no stand-in process behind. Call it on the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()

    async def watch() -> None:
        while not stop.is_set():
            await asyncio.sleep(1)
            if os.getppid() != parent:  # re-parented: the starter exited without stopping us
                stop.set()

    task = loop.create_task(watch())
    _WATCHERS.add(task)
    task.add_done_callback(_WATCHERS.discard)
    return stop
