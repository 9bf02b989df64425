"""`python -m infra.local.managed_flink`: serve the Managed Flink stand-in on 127.0.0.1 until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging

from infra.local.loopback_http import stop_signal
from infra.local.managed_flink.runner import Delays, InMemoryRunner
from infra.local.managed_flink.server import StandinConfig, log, running


def parse_args(argv: list[str] | None = None) -> tuple[StandinConfig, Delays, str | None]:
    """The stand-in's config and the in-memory runner's delays from the command line, and the log file."""
    p = argparse.ArgumentParser(prog="python -m infra.local.managed_flink", description=__doc__)
    p.add_argument("--port", type=int, default=0, help="0: a free port (printed in the log)")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--account", default="123456789012")
    p.add_argument("--max-snapshots", type=int, default=1000)
    defaults = Delays()
    p.add_argument("--start-s", type=float, default=defaults.start_s, help="seconds in STARTING")
    p.add_argument("--stop-s", type=float, default=defaults.stop_s, help="seconds in STOPPING")
    p.add_argument("--force-stop-s", type=float, default=defaults.force_stop_s, help="seconds in FORCE_STOPPING")
    p.add_argument("--snapshot-s", type=float, default=defaults.snapshot_s, help="seconds a snapshot is CREATING")
    p.add_argument("--delete-snapshot-s", type=float, default=defaults.delete_snapshot_s)
    p.add_argument("--log-file", help="append the log here instead of stderr")
    a = p.parse_args(argv)
    try:
        config = StandinConfig(port=a.port, region=a.region, account=a.account, max_snapshots=a.max_snapshots)
        delays = Delays(a.start_s, a.stop_s, a.force_stop_s, a.snapshot_s, a.delete_snapshot_s)
    except ValueError as exc:
        p.error(str(exc))
    return config, delays, a.log_file


async def serve(config: StandinConfig, delays: Delays) -> None:
    """Serve until SIGTERM or SIGINT, or until the process that started this one is gone."""
    stop = stop_signal()
    async with running(config, InMemoryRunner(delays)) as (url, _):
        log.info("managed flink stand-in listening on %s", url)
        await stop.wait()
    log.info("managed flink stand-in stopped")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, configure logging, serve."""
    config, delays, log_file = parse_args(argv)
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler()
    logging.basicConfig(level=logging.INFO, handlers=[handler], format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(config, delays))


if __name__ == "__main__":
    main()
