"""`python -m infra.local.pull_api`: serve the pull stand-in on 127.0.0.1 until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from infra.local.loopback_http import stop_signal
from infra.local.pull_api.rules import PullApiConfig
from infra.local.pull_api.server import log, running


def parse_args(argv: list[str] | None = None) -> tuple[PullApiConfig, str | None, str | None]:
    """The stand-in's config, the file to write its URL to once listening, and the log file."""
    p = argparse.ArgumentParser(prog="python -m infra.local.pull_api", description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rate", type=float, default=50.0, help="page requests per second, across all clients")
    p.add_argument("--burst", type=int, default=10)
    p.add_argument("--fail-rate", type=float, default=0.0, help="fraction of page requests answered 503")
    p.add_argument("--latency-ms", type=int, default=0, help="added to every page (a slow partner)")
    p.add_argument("--max-limit", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--client-id", default="medistream-puller")
    # The secret comes from the environment, never argv (argv is visible to every local user).
    p.add_argument("--client-secret-env", metavar="VAR", required=True, help="the OAuth2 client secret is $VAR")
    p.add_argument("--token-ttl-s", type=int, default=3600)
    p.add_argument("--url-file", help="write the base URL here once listening")
    p.add_argument("--log-file", help="append the log here instead of stderr")
    a = p.parse_args(argv)
    if not os.environ.get(a.client_secret_env):
        p.error(f"environment variable {a.client_secret_env} is not set")
    config = PullApiConfig(port=a.port, rate=a.rate, burst=a.burst, fail_rate=a.fail_rate, latency_ms=a.latency_ms,
                           max_limit=a.max_limit, seed=a.seed, client_id=a.client_id,
                           client_secret=os.environ[a.client_secret_env], token_ttl_s=a.token_ttl_s)
    return config, a.url_file, a.log_file


async def serve(config: PullApiConfig, url_file: str | None) -> None:
    """Serve until SIGTERM or SIGINT, or until the process that started this one is gone."""
    stop = stop_signal()
    async with running(config) as url:
        if url_file:
            tmp = Path(url_file + ".tmp")
            tmp.write_text(url)
            tmp.replace(url_file)  # whole or absent: a reader never sees half a URL
        log.info("pull stand-in listening on %s", url)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, configure logging, serve."""
    config, url_file, log_file = parse_args(argv)
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler()
    logging.basicConfig(level=logging.INFO, handlers=[handler], format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(config, url_file))


if __name__ == "__main__":
    main()
