"""The local S3/KMS/Secrets Manager/DynamoDB API (moto server) with atomic DynamoDB conditional writes.

moto evaluates a DynamoDB condition expression and then writes, with no lock between the two, and
its server is threaded: two concurrent conditional writes on one item can both succeed, which real
DynamoDB never allows (measured: 10 of 40 rounds of 4 racing writers). The delivery ledger and the
audit log's hash chain rely on that atomicity, so this launcher runs DynamoDB requests one at a time
(per item would be enough; the whole service is simpler and DynamoDB traffic here is small). S3,
KMS and Secrets Manager requests stay concurrent.

    python -m infra.local.moto_serialized -H 127.0.0.1 -p 15000
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

_DYNAMODB_TARGET = "DynamoDB_"


def serialize_dynamodb(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Wrap a WSGI app so DynamoDB requests (X-Amz-Target DynamoDB_*) run one at a time."""
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith(_DYNAMODB_TARGET):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def main(argv: list[str] | None = None) -> int:
    """Serve moto on the given loopback host and port until SIGTERM/SIGINT."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler  # type: ignore[attr-defined]
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(prog="python -m infra.local.moto_serialized")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, serialize_dynamodb(app), threaded=True, request_handler=MotoRequestHandler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
