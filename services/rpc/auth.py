"""Bearer-token authentication and roles for the gRPC API, as a server interceptor.

Tokens come from configuration (``grpc.tokens``) and/or a file (``grpc.tokens_file``), one
``role:name:token`` per entry or line. Roles: ``reader`` may call every read RPC and CheckOrder;
``operator`` may also acknowledge alerts and stream ticks (both change state). With no tokens
configured, authentication is off (loopback development). Health and reflection stay open so load
balancers and tools can probe. Tokens never reach a log line; comparisons take constant time.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc

from services.errors import ConfigError

log = logging.getLogger(__name__)


class Role(StrEnum):
    READER = "reader"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    token: bytes


def parse_tokens(entries: Iterable[str], source: str) -> list[Principal]:
    """Entries ``role:name:token``; blank entries and ``#`` comments are skipped."""
    out = []
    for number, raw in enumerate(entries, 1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        role, _, rest = entry.partition(":")
        name, _, token = rest.partition(":")
        if role not in Role.__members__.values() or not name or len(token) < 16:
            # Never echo the entry: it holds a secret.
            raise ConfigError(f"{source}: entry {number} must be 'reader|operator:<name>:<token of 16+ chars>'")
        out.append(Principal(name, Role(role), token.encode()))
    return out


def load_tokens(tokens: str, tokens_file: str) -> list[Principal]:
    principals = parse_tokens(tokens.split(","), "grpc.tokens") if tokens else []
    if tokens_file:
        try:
            lines = Path(tokens_file).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"grpc.tokens_file {tokens_file}: {exc.strerror}") from None
        principals += parse_tokens(lines, f"grpc.tokens_file {tokens_file}")
    return principals


class TokenAuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, principals: Iterable[Principal], *, protected_service: str, operator_methods: Iterable[str]):
        self._principals = tuple(principals)
        self._prefix = f"/{protected_service}/"
        self._operator = frozenset(f"{self._prefix}{m}" for m in operator_methods)

    def _authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> Principal | None:
        header = next((v for k, v in metadata if k == "authorization"), None)
        if header is None:
            return None
        text = header.decode() if isinstance(header, bytes) else header
        scheme, _, token = text.partition(" ")
        if scheme.lower() != "bearer":
            return None
        presented = token.strip().encode()
        found = None
        for principal in self._principals:  # no early exit: time does not depend on which token matched
            if hmac.compare_digest(presented, principal.token):
                found = principal
        return found

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or not method.startswith(self._prefix):
            return handler
        principal = self._authenticate(handler_call_details.invocation_metadata or ())
        if principal is None:
            return denied(handler, grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        if method in self._operator and principal.role is not Role.OPERATOR:
            log.info("denied %s to %s (role %s)", method, principal.name, principal.role.value)
            return denied(handler, grpc.StatusCode.PERMISSION_DENIED, f"{method} needs the operator role")
        return handler


def denied(
    handler: grpc.RpcMethodHandler[Any, Any], code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as the real one that only aborts."""

    def abort(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, **kw)
    return grpc.unary_unary_rpc_method_handler(abort, **kw)
