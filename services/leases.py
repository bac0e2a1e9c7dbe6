"""Job leases: at most one replica runs each scheduled job (one row per job in ``job_leases``).

A replica claims a job's lease before each run with one upsert that succeeds only when the lease is free,
expired, or already its own; a heartbeat renews the leases it holds while it lives. A replica that dies
stops renewing, and another one takes the job at its next scheduled run after the lease expires.
Expiry uses the database clock (``now()``), so replicas' clocks never need to agree.

Why a table and not session-level advisory locks: a lease survives connection poolers (PgBouncer in
transaction mode breaks session locks), needs no connection held open per replica, and ``SELECT * FROM
job_leases`` shows who runs what. The cost is a TTL: a dead leader is replaced after ``ttl_s``, not at
once; a clean stop releases its leases so the replacement is immediate.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading

from sqlalchemy import Engine, text

log = logging.getLogger(__name__)

# The WHERE makes the upsert a compare-and-set: a live lease of another holder is left untouched and
# RETURNING yields no row. Concurrent first claims of a new job serialise on the primary key.
_CLAIM = text(
    """
    INSERT INTO job_leases AS l (job_id, holder, acquired_at, renewed_at, expires_at)
    VALUES (:job, :me, now(), now(), now() + make_interval(secs => :ttl))
    ON CONFLICT (job_id) DO UPDATE
       SET holder = EXCLUDED.holder,
           acquired_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at ELSE now() END,
           renewed_at = now(),
           expires_at = EXCLUDED.expires_at
     WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
    RETURNING l.job_id
    """
)
_RENEW = text(
    "UPDATE job_leases SET renewed_at = now(), expires_at = now() + make_interval(secs => :ttl)"
    " WHERE holder = :me RETURNING job_id"
)
_RELEASE = text("DELETE FROM job_leases WHERE holder = :me")


def holder_id(instance: str) -> str:
    """A holder id unique per process: the pid alone repeats across container restarts (often pid 1)."""
    return f"{instance}#{os.getpid()}#{secrets.token_hex(3)}"


class JobLeases:
    """The leases of one replica. ``claim`` before a run, ``renew`` from a heartbeat, ``release`` at stop."""

    def __init__(self, engine: Engine, holder: str, ttl_s: float) -> None:
        self.engine = engine
        self.holder = holder
        self.ttl_s = ttl_s
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, job_id: str) -> bool:
        """True when this replica holds the job's lease for another ``ttl_s``; raises if the database does."""
        try:
            with self.engine.begin() as conn:
                won = conn.execute(_CLAIM, {"job": job_id, "me": self.holder, "ttl": self.ttl_s}).first()
        except Exception:
            self._set(job_id, held=False)  # unknown: don't advertise a lease we may have lost
            raise
        self._set(job_id, held=won is not None)
        return won is not None

    def renew(self) -> frozenset[str]:
        """Extend every lease this replica still holds; a lease taken over meanwhile is dropped."""
        try:
            with self.engine.begin() as conn:
                held = {str(job) for (job,) in conn.execute(_RENEW, {"me": self.holder, "ttl": self.ttl_s})}
        except Exception:
            with self._lock:
                self._held.clear()
            raise
        with self._lock:
            lost = self._held - held
            self._held = held
        if lost:
            log.warning("lost job leases: %s", ", ".join(sorted(lost)))
        return frozenset(held)

    def release(self) -> None:
        """Give every lease back (clean stop), so another replica takes the jobs at its next run."""
        with self._lock:
            self._held.clear()
        with self.engine.begin() as conn:
            conn.execute(_RELEASE, {"me": self.holder})

    def held(self) -> frozenset[str]:
        """Jobs this replica led at its last claim or renewal."""
        with self._lock:
            return frozenset(self._held)

    def _set(self, job_id: str, *, held: bool) -> None:
        with self._lock:
            if held:
                self._held.add(job_id)
            else:
                self._held.discard(job_id)
