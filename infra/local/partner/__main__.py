"""`python -m infra.local.partner`: serve the partner stand-in on 127.0.0.1 until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from infra.local.loopback_http import stop_signal
from infra.local.partner.rules import PartnerConfig
from infra.local.partner.server import log, running


def parse_args(argv: list[str] | None = None) -> tuple[PartnerConfig, str | None]:
    """The stand-in's config from the command line, and the log file (None: stderr)."""
    p = argparse.ArgumentParser(prog="python -m infra.local.partner", description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rate", type=float, default=50.0, help="requests per second, across all clients")
    p.add_argument("--burst", type=int, default=10)
    p.add_argument("--fail-rate", type=float, default=0.0, help="fraction of deliveries answered 503")
    p.add_argument("--timeout-rate", type=float, default=0.0, help="fraction recorded, then held --hold-s")
    p.add_argument("--hold-s", type=float, default=5.0)
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    # Secrets come from the environment, never argv (argv is visible to every local user).
    p.add_argument("--bearer-token-env", metavar="VAR", help="require `Bearer $VAR`")
    p.add_argument("--hmac-secret-env", metavar="VAR", help="require an HMAC-SHA256 signature keyed by $VAR")
    p.add_argument("--replay-window-s", type=int, default=300)
    p.add_argument("--client-id", help="OAuth2 client id: POST /oauth2/token issues the bearer tokens")
    p.add_argument("--client-secret-env", metavar="VAR", help="the OAuth2 client secret is $VAR")
    p.add_argument("--token-ttl-s", type=int, default=3600)
    p.add_argument("--reject-fraction", type=float, default=0.0,
                   help="fraction of business keys (by hash) refused with 422")
    p.add_argument("--log-file", help="append the log here instead of stderr")
    a = p.parse_args(argv)

    def secret(var: str | None) -> str | None:
        if var is None:
            return None
        if not os.environ.get(var):
            p.error(f"environment variable {var} is not set")
        return os.environ[var]

    hmac_secret = secret(a.hmac_secret_env)
    config = PartnerConfig(
        port=a.port, rate=a.rate, burst=a.burst, fail_rate=a.fail_rate, timeout_rate=a.timeout_rate,
        hold_s=a.hold_s, latency_ms=a.latency_ms, seed=a.seed, bearer_token=secret(a.bearer_token_env),
        hmac_secret=hmac_secret.encode() if hmac_secret else None, replay_window_s=a.replay_window_s,
        client_id=a.client_id, client_secret=secret(a.client_secret_env), token_ttl_s=a.token_ttl_s,
        reject_fraction=a.reject_fraction,
    )
    return config, a.log_file


async def serve(config: PartnerConfig) -> None:
    """Serve until SIGTERM or SIGINT, or until the process that started this one is gone."""
    stop = stop_signal()
    async with running(config) as url:
        log.info("partner stand-in listening on %s", url)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, configure logging, serve."""
    config, log_file = parse_args(argv)
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler()
    logging.basicConfig(level=logging.INFO, handlers=[handler], format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
