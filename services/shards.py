"""Account shards: per-account collection split across replicas, claimed in PostgreSQL with SKIP LOCKED.

Each per-account collection job (positions, balances, custody) has ``count`` shard rows in
``collection_shards``; an account belongs to shard ``crc32("<venue>/<account>") % count`` (stable across
processes and restarts, unlike Python's ``hash``). Every replica runs those jobs, each over the accounts
of the shards it holds, so adding a replica adds collection capacity.

A heartbeat (``rebalance``, every ``ttl_s / 3``) does in one transaction: mark this replica present in
``replicas``; renew the shards it holds; give back those above its fair share (``ceil(count / live
replicas)``); claim free or expired shards up to it with ``FOR UPDATE SKIP LOCKED`` (replicas claiming
at once never wait on each other or take the same row). A replica that dies stops renewing: its shards
expire after ``ttl_s`` and the others claim them at their next heartbeat. Expiry uses the database clock.
"""

from __future__ import annotations

import logging
import math
import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from services.collection import AccountFilter

log = logging.getLogger(__name__)


class ShardsUnknown(RuntimeError):
    """The last heartbeat failed (database unreachable): which shards this replica holds is unknown."""


def shard_of(venue_id: str, account: str, count: int) -> int:
    """The shard of a venue's account (its external id): the same number in every process."""
    return zlib.crc32(f"{venue_id}/{account}".encode()) % count


_PRESENT = text(
    "INSERT INTO replicas (holder, started_at, expires_at) VALUES (:me, now(), now() + make_interval(secs => :ttl))"
    " ON CONFLICT (holder) DO UPDATE SET expires_at = EXCLUDED.expires_at"
)
_LIVE = text("SELECT count(*) FROM replicas WHERE expires_at >= now()")
_FORGET_DEAD = text("DELETE FROM replicas WHERE expires_at < now() - interval '1 hour'")
_ENSURE = text(
    "INSERT INTO collection_shards (job_id, shard, expires_at)"
    " SELECT job, s, now() FROM unnest(CAST(:jobs AS text[])) AS j(job)"
    " CROSS JOIN generate_series(0, :n - 1) AS s ON CONFLICT DO NOTHING"
)
_RENEW = text(
    "UPDATE collection_shards SET expires_at = now() + make_interval(secs => :ttl)"
    " WHERE holder = :me AND shard < :n AND job_id = ANY(:jobs) RETURNING job_id, shard"
)
_GIVE_BACK = text(
    "UPDATE collection_shards SET holder = NULL, expires_at = now()"
    " WHERE holder = :me AND job_id = :job AND shard = ANY(:shards)"
)
# Free (released), expired, or rows never claimed; SKIP LOCKED: rows another replica is claiming right now
# are passed over instead of waited for, so concurrent claims neither block nor collide.
_CLAIM = text(
    """
    UPDATE collection_shards AS c
       SET holder = :me, acquired_at = now(), expires_at = now() + make_interval(secs => :ttl)
      FROM (SELECT job_id, shard FROM collection_shards
             WHERE job_id = :job AND shard < :n AND (holder IS NULL OR expires_at < now())
             ORDER BY shard LIMIT :k FOR UPDATE SKIP LOCKED) AS free
     WHERE c.job_id = free.job_id AND c.shard = free.shard
    RETURNING c.shard
    """
)
_RELEASE = text("UPDATE collection_shards SET holder = NULL, expires_at = now() WHERE holder = :me")
_LEAVE = text("DELETE FROM replicas WHERE holder = :me")


@dataclass(frozen=True)
class ShardSubset:
    """The accounts of ``held`` shards among those listed (an AccountFilter; picklable, for worker processes)."""

    venue_id: str
    count: int
    held: frozenset[int]

    def __call__(self, accounts: Sequence[str]) -> list[str]:
        return [a for a in accounts if shard_of(self.venue_id, a, self.count) in self.held]


class AccountShards:
    """The shards one replica holds, per job. ``claim`` (the scheduler's lease check) is True when it holds
    any shard of the job; ``only`` narrows a run to the accounts of the shards held at its start."""

    def __init__(self, engine: Engine, holder: str, count: int, ttl_s: float) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.engine = engine
        self.holder = holder
        self.count = count
        self.ttl_s = ttl_s
        self.jobs: tuple[str, ...] = ()
        self._held: dict[str, frozenset[int]] = {}
        self._failed = False  # the last heartbeat raised
        self._lock = threading.Lock()

    def register(self, jobs: Iterable[str]) -> None:
        """Create the shard rows of these jobs (idempotent: every replica does it at start)."""
        self.jobs = tuple(sorted({*self.jobs, *jobs}))
        with self.engine.begin() as conn:
            conn.execute(_ENSURE, {"jobs": list(self.jobs), "n": self.count})

    def rebalance(self) -> dict[str, frozenset[int]]:
        """The heartbeat: presence, renewal, fair share. Returns the shards held afterwards, per job."""
        try:
            with self.engine.begin() as conn:
                held = self._rebalance(conn)
        except Exception:
            with self._lock:
                self._held = {}  # unknown: collect nothing rather than shards another replica may own now
                self._failed = True
            raise
        with self._lock:
            lost = {job: self._held.get(job, frozenset()) - shards for job, shards in held.items()}
            self._held = held
            self._failed = False
        for job, shards in lost.items():
            if shards:
                log.info("shards of %s moved away: %s", job, sorted(shards))
        return held

    def _rebalance(self, conn: Connection) -> dict[str, frozenset[int]]:
        args = {"me": self.holder, "ttl": self.ttl_s, "n": self.count}
        conn.execute(_PRESENT, args)
        conn.execute(_FORGET_DEAD)
        live = max(1, int(conn.scalar(_LIVE) or 1))
        fair = math.ceil(self.count / live)
        held: dict[str, set[int]] = {job: set() for job in self.jobs}
        for job, shard in conn.execute(_RENEW, {**args, "jobs": list(self.jobs)}):
            held[str(job)].add(int(shard))
        for job, shards in held.items():
            if len(shards) > fair:
                excess = sorted(shards)[fair:]  # keep the lowest: stable ownership while nothing changes
                conn.execute(_GIVE_BACK, {"me": self.holder, "job": job, "shards": excess})
                shards.difference_update(excess)
            elif len(shards) < fair:
                won = conn.execute(_CLAIM, {**args, "job": job, "k": fair - len(shards)}).scalars()
                shards.update(int(s) for s in won)
        return {job: frozenset(shards) for job, shards in held.items()}

    def claim(self, job_id: str) -> bool:
        """True when this replica holds a shard of the job (no database round trip: the heartbeat keeps it).

        Raises ``ShardsUnknown`` while the heartbeat is failing, so the run counts as failed (as a job lease
        claim against an unreachable database does), not as quietly led by another replica."""
        with self._lock:
            if self._failed:
                raise ShardsUnknown(f"account shards of {job_id} unknown: the last shard heartbeat failed")
            return bool(self._held.get(job_id))

    def only(self, job_id: str, venue_id: str) -> AccountFilter:
        with self._lock:
            held = self._held.get(job_id, frozenset())
        return ShardSubset(venue_id, self.count, held)

    def held(self) -> dict[str, frozenset[int]]:
        with self._lock:
            return dict(self._held)

    def release(self) -> None:
        """Give every shard back and leave (clean stop): the others take them at their next heartbeat."""
        with self._lock:
            self._held = {}
        with self.engine.begin() as conn:
            conn.execute(_RELEASE, {"me": self.holder})
            conn.execute(_LEAVE, {"me": self.holder})
