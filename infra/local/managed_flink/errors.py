"""The errors the Managed Flink stand-in answers with, named and shaped as the real service names them.

Every kinesisanalyticsv2 error is HTTP 400 with a JSON body `{"__type": "<Name>Exception", "message": ...}`,
which botocore turns into `client.exceptions.<Name>Exception`.
"""

from __future__ import annotations

from collections.abc import Callable


class ApiError(Exception):
    """An error answered on the wire: the exception name botocore looks up, its message, its HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status

    def body(self) -> dict[str, str]:
        """The AWS JSON 1.1 error document."""
        return {"__type": self.code, "message": self.message}


def _named(code: str) -> Callable[[str], ApiError]:
    def make(message: str) -> ApiError:
        return ApiError(code, message)

    make.__name__ = make.__qualname__ = code
    return make


# The service's names, each with when the stand-in answers it.
in_use = _named("ResourceInUseException")  # the status does not allow the action; the name is taken
not_found = _named("ResourceNotFoundException")  # no such application or snapshot
invalid_argument = _named("InvalidArgumentException")  # a value breaks a constraint or another value
invalid_request = _named("InvalidRequestException")  # not JSON for the operation: types, unknown members
invalid_configuration = _named("InvalidApplicationConfigurationException")  # no code; snapshots disabled
concurrent_modification = _named("ConcurrentModificationException")  # not the current version id or token
unsupported = _named("UnsupportedOperationException")  # valid for the service, not served by the stand-in
limit_exceeded = _named("LimitExceededException")  # the per-application snapshot quota
