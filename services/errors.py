"""The exception hierarchy shared by every edge.

Domain errors subclass ``RiskMonitorError`` and the nearest builtin. Edges translate them:
``http_status``/``grpc_code`` say how, so the HTTP server, the gRPC servicer and the CLI agree.
"""

from __future__ import annotations


class RiskMonitorError(Exception):
    """Base of every error the service raises on purpose."""

    http_status = 500
    grpc_code = "INTERNAL"  # a grpc.StatusCode name; kept as text so models/ needs no grpc import


class ConfigError(RiskMonitorError, ValueError):
    """Configuration is missing or invalid. The message names the key and the value."""

    http_status = 500
    grpc_code = "FAILED_PRECONDITION"


class NotFoundError(RiskMonitorError, LookupError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class InvalidArgumentError(RiskMonitorError, ValueError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class ConflictError(RiskMonitorError):
    http_status = 409
    grpc_code = "FAILED_PRECONDITION"


class UnavailableError(RiskMonitorError):
    """A dependency (database, venue) cannot be reached right now; retrying later may work."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class DatabaseUnavailable(UnavailableError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"database {url} is unreachable: {reason}")
        self.url = url
        self.reason = reason
