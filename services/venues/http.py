"""REST clients for exchanges and custodians: timeouts, retries, circuit breakers, domain errors.

Each client owns one thread-safe urllib3 connection pool (sized by ``HttpPolicy.connections``), so a
collection run may issue its requests concurrently. urllib3 directly rather than `requests`: at
thousands of requests per second, requests' per-call work (environment proxy lookup, cookie jar,
request preparation) cost about as much CPU as the call itself. Every GET has an explicit (connect,
read) timeout and is retried by `urllib3.Retry` on transient failures only (connection errors,
timeouts, 500/502/503/504), with exponential backoff and jitter. A circuit breaker per endpoint stops
hammering a venue that keeps failing. Transport errors become `VenueUnavailable` / `VenueTimeout` /
`CircuitOpen` here, and bodies are validated by `models.payloads` (`MalformedResponse` for a wholly
bad body).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote, urlencode, urlsplit
from urllib.request import getproxies_environment, proxy_bypass

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from models.payloads import (
    DEFAULT_MAX_SKEW,
    AccountRecord,
    BalanceRecord,
    BatchResult,
    CustodyBalanceRecord,
    MalformedResponse,
    ParseResult,
    PositionRecord,
    SettlementRecord,
    parse_balances,
    parse_batch,
    parse_client_accounts,
    parse_exchange_accounts,
    parse_master_balance,
    parse_positions,
    parse_segregated_balances,
    parse_settlements,
)
from services import metrics, tracing
from services.venues.breaker import BreakerState, CircuitBreaker, CircuitOpen

log = logging.getLogger(__name__)

P = TypeVar("P")

__all__ = [
    "VENUE_ERRORS",
    "CircuitOpen",
    "CustodianClient",
    "ExchangeClient",
    "HttpPolicy",
    "MalformedResponse",
    "VenueTimeout",
    "VenueUnavailable",
]


class VenueUnavailable(ConnectionError):
    """The venue could not be reached or answered with an HTTP error (after any retries)."""

    def __init__(self, venue: str, endpoint: str, detail: str, *, status: int | None = None) -> None:
        super().__init__(f"{venue} {endpoint}: {detail}")
        self.venue, self.endpoint, self.status = venue, endpoint, status


class VenueTimeout(VenueUnavailable):
    """The venue did not connect or answer within the configured timeout (after any retries)."""


# Query parameters: a mapping, or pairs when a name repeats (`?account_id=a&account_id=b`).
Params = Mapping[str, str] | Sequence[tuple[str, str]]

# What a caller (a collection job) catches per venue call.
VENUE_ERRORS = (VenueUnavailable, CircuitOpen, MalformedResponse)


@dataclass(frozen=True)
class HttpPolicy:
    """Timeouts, retry and breaker settings, shared by the clients of one kind of venue."""

    connect_timeout: float = 2.0
    read_timeout: float = 5.0  # per socket read, not for the whole body
    retries: int = 2  # extra attempts after the first, for transient failures only
    backoff_factor: float = 0.2  # sleeps 0, 0.4, 0.8, ... s (urllib3 skips the first backoff)
    backoff_max: float = 5.0
    backoff_jitter: float = 0.2  # up to this many seconds added to each backoff
    # 500 is included: for an idempotent GET a generic server error is worth one more try.
    retry_statuses: frozenset[int] = frozenset({500, 502, 503, 504})
    breaker_threshold: int = 5  # consecutive failed calls (after retries) that open the breaker
    breaker_cooldown: float = 30.0
    max_skew: timedelta = DEFAULT_MAX_SKEW
    api_key_header: str = "X-API-Key"
    connections: int = 10  # kept-alive connections per client: size it to the venue's request concurrency

    def retry(self) -> Retry:
        return Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            other=0,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=self.retry_statuses,
            backoff_factor=self.backoff_factor,
            backoff_max=self.backoff_max,
            backoff_jitter=self.backoff_jitter,
            raise_on_status=False,  # the last response comes back and is translated below
            respect_retry_after_header=False,  # a venue must not be able to stall a collection cycle
        )


class _VenueHttp:
    """One venue's connection pool, breakers and error translation, shared by both client kinds."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        api_key: str | None,
        policy: HttpPolicy,
        clock: Callable[[], datetime],
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.policy = policy
        self.clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}
        self._breakers_lock = threading.Lock()  # metrics may read states from another thread
        headers = {"Accept": "application/json"}
        if api_key:
            headers[policy.api_key_header] = api_key  # never logged: we log paths only
        self._timeout = urllib3.Timeout(connect=policy.connect_timeout, read=policy.read_timeout)
        self._retry = policy.retry()
        # A proxy from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) is honoured, resolved once here.
        proxy = _environment_proxy(self.base_url)
        size = max(1, policy.connections)
        self._pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, num_pools=1, maxsize=size, headers=headers)
            if proxy
            else urllib3.PoolManager(num_pools=1, maxsize=size, headers=headers)
        )

    def breaker(self, endpoint: str) -> CircuitBreaker:
        with self._breakers_lock:
            if endpoint not in self.breakers:
                self.breakers[endpoint] = CircuitBreaker(
                    f"{self.name}/{endpoint}",
                    failure_threshold=self.policy.breaker_threshold,
                    cooldown=self.policy.breaker_cooldown,
                )
            return self.breakers[endpoint]

    def get(self, endpoint: str, path: str, params: Params | None = None) -> bytes:
        started = time.perf_counter()
        outcome = "unavailable"
        # No URL on the span: venue URLs may carry credentials, and paths carry account ids.
        with tracing.span(
            f"venue {endpoint}", kind=tracing.SpanKind.CLIENT, venue=self.name, endpoint=endpoint
        ) as span:
            try:
                body = self._get(endpoint, path, params)
                outcome = "ok"
                return body
            except CircuitOpen:
                outcome = "circuit_open"
                raise
            except VenueUnavailable as exc:
                outcome = _outcome(exc)
                raise
            finally:
                span.set_attribute("outcome", outcome)
                metrics.VENUE_REQUESTS.labels(self.name, endpoint, outcome).inc()
                if outcome != "circuit_open":  # not a call: it would drag the latency buckets towards 0
                    metrics.VENUE_REQUEST_DURATION.labels(self.name, endpoint).observe(time.perf_counter() - started)

    def _get(self, endpoint: str, path: str, params: Params | None) -> bytes:
        breaker = self.breaker(endpoint)
        breaker.before_call()
        url = self.base_url + path + (f"?{urlencode(params)}" if params else "")
        try:
            response = self._pool.request("GET", url, timeout=self._timeout, retries=self._retry)
            body = response.data
            tracing.annotate(**{"http.response.status_code": response.status})
        except HTTPError as exc:
            breaker.record_failure()
            error = self._translate(endpoint, exc)
            log.warning("venue %s %s failed: %s", self.name, endpoint, error)
            raise error from exc
        except BaseException:
            breaker.record_failure()  # never leave a half-open probe unresolved
            raise
        status = response.status
        if status >= 500:
            breaker.record_failure()
            log.warning("venue %s %s answered HTTP %s", self.name, endpoint, status)
            raise VenueUnavailable(self.name, endpoint, f"HTTP {status}", status=status)
        breaker.record_success()  # 4xx: the venue is up, the request was wrong
        if status >= 400:
            raise VenueUnavailable(self.name, endpoint, f"HTTP {status}", status=status)
        return body

    def _translate(self, endpoint: str, exc: HTTPError) -> VenueUnavailable:
        reason: BaseException | None = exc.reason if isinstance(exc, MaxRetryError) else exc
        # urllib3's NewConnectionError (refused, unreachable) subclasses ConnectTimeoutError: not a timeout.
        timed_out = not isinstance(reason, NewConnectionError) and isinstance(
            reason, ReadTimeoutError | ConnectTimeoutError | TimeoutError
        )
        if timed_out:
            limit = f"{self.policy.connect_timeout}s connect / {self.policy.read_timeout}s read"
            return VenueTimeout(self.name, endpoint, f"timed out ({limit})")
        return VenueUnavailable(self.name, endpoint, f"{type(exc).__name__}: {type(reason).__name__}")

    def breaker_states(self) -> dict[str, BreakerState]:
        return {endpoint: breaker.state for endpoint, breaker in self.breakers.items()}

    def close(self) -> None:
        self._pool.clear()


def _environment_proxy(base_url: str) -> str | None:
    """The proxy URL the environment sets for this venue's scheme, unless NO_PROXY exempts its host."""
    parts = urlsplit(base_url)
    proxy = getproxies_environment().get(parts.scheme)
    if not proxy or proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _now() -> datetime:
    return datetime.now(UTC)


def _outcome(exc: VenueUnavailable) -> str:
    if isinstance(exc, VenueTimeout):
        return "timeout"
    if exc.status is None:
        return "unavailable"
    return "server_error" if exc.status >= 500 else "client_error"


class _Client:
    """Base of the venue clients. Safe to call from several threads (one thread-safe connection pool)."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str | None = None,
        api_key: str | None = None,
        policy: HttpPolicy | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._http = _VenueHttp(
            base_url, name=name or base_url, api_key=api_key, policy=policy or HttpPolicy(), clock=clock
        )
        self.name = self._http.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._http.base_url!r}, name={self.name!r})"  # no api_key

    @property
    def _skew(self) -> timedelta:
        return self._http.policy.max_skew

    def breaker_states(self) -> dict[str, BreakerState]:
        """State of each endpoint's breaker (for metrics): endpoint name -> closed/open/half_open."""
        return self._http.breaker_states()

    def _batch(
        self,
        endpoint: str,
        path: str,
        id_key: str,
        ids: Sequence[str],
        parse: Callable[[dict[str, Any], str, datetime], P],
    ) -> BatchResult[P]:
        """One batched GET (`?id_key=a&id_key=b`), each entry parsed by ``parse(entry, id, now)``."""
        body = self._http.get(endpoint, path, [(id_key, i) for i in ids])
        now = self._http.clock()
        return parse_batch(body, id_key=id_key, requested=list(ids), parse_one=lambda doc, key: parse(doc, key, now))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ExchangeClient(_Client):
    """`GET /api/v1/accounts[/{id}/positions|balances]` of one exchange, and their batched forms
    `GET /api/v1/positions|balances?account_id=..&account_id=..` (docs/venue-api.md)."""

    def accounts(self) -> ParseResult[AccountRecord]:
        body = self._http.get("accounts", "/api/v1/accounts")
        return parse_exchange_accounts(body, now=self._http.clock())

    def positions(self, account_id: str) -> ParseResult[PositionRecord]:
        body = self._http.get("positions", f"/api/v1/accounts/{quote(account_id, safe='')}/positions")
        return parse_positions(body, now=self._http.clock(), max_skew=self._skew, account_id=account_id)

    def balances(self, account_id: str) -> ParseResult[BalanceRecord]:
        body = self._http.get("balances", f"/api/v1/accounts/{quote(account_id, safe='')}/balances")
        return parse_balances(body, now=self._http.clock(), max_skew=self._skew, account_id=account_id)

    def positions_batch(self, account_ids: Sequence[str]) -> BatchResult[ParseResult[PositionRecord]]:
        skew = self._skew
        return self._batch(
            "positions",
            "/api/v1/positions",
            "account_id",
            account_ids,
            lambda doc, key, now: parse_positions(doc, now=now, max_skew=skew, account_id=key),
        )

    def balances_batch(self, account_ids: Sequence[str]) -> BatchResult[ParseResult[BalanceRecord]]:
        skew = self._skew
        return self._batch(
            "balances",
            "/api/v1/balances",
            "account_id",
            account_ids,
            lambda doc, key, now: parse_balances(doc, now=now, max_skew=skew, account_id=key),
        )


class CustodianClient(_Client):
    """Client accounts, master and segregated balances, pending settlements of one custodian."""

    def accounts(self) -> ParseResult[AccountRecord]:
        body = self._http.get("accounts", "/api/v1/accounts")
        return parse_client_accounts(body, now=self._http.clock())

    def master_balance(self, client_id: str) -> ParseResult[CustodyBalanceRecord]:
        body = self._http.get("master-balance", f"/api/v1/accounts/{quote(client_id, safe='')}/master-balance")
        return parse_master_balance(body, now=self._http.clock(), max_skew=self._skew, client_id=client_id)

    def segregated_balances(self, client_id: str) -> ParseResult[CustodyBalanceRecord]:
        path = f"/api/v1/accounts/{quote(client_id, safe='')}/segregated-balances"
        body = self._http.get("segregated-balances", path)
        return parse_segregated_balances(body, now=self._http.clock(), max_skew=self._skew, client_id=client_id)

    def master_balances(self, client_ids: Sequence[str]) -> BatchResult[ParseResult[CustodyBalanceRecord]]:
        """Batched `master-balance`: `GET /api/v1/master-balances?client_id=..&client_id=..`."""
        skew = self._skew
        return self._batch(
            "master-balance",
            "/api/v1/master-balances",
            "client_id",
            client_ids,
            lambda doc, key, now: parse_master_balance(doc, now=now, max_skew=skew, client_id=key),
        )

    def segregated_balances_batch(self, client_ids: Sequence[str]) -> BatchResult[ParseResult[CustodyBalanceRecord]]:
        """Batched `segregated-balances`: `GET /api/v1/segregated-balances?client_id=..&client_id=..`."""
        skew = self._skew
        return self._batch(
            "segregated-balances",
            "/api/v1/segregated-balances",
            "client_id",
            client_ids,
            lambda doc, key, now: parse_segregated_balances(doc, now=now, max_skew=skew, client_id=key),
        )

    def pending_settlements(self) -> ParseResult[SettlementRecord]:
        body = self._http.get("settlements", "/api/v1/settlements", {"status": "PENDING"})
        return parse_settlements(body, now=self._http.clock(), max_skew=self._skew)
