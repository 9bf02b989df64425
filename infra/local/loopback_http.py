"""aiohttp stand-ins served on 127.0.0.1 only (the partner delivery and the pull API stand-ins)."""

from __future__ import annotations

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
