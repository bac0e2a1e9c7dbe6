"""Account shards on a real PostgreSQL: fair split, SKIP LOCKED claims, takeover after expiry, release."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, text

from services.leases import holder_id
from services.shards import AccountShards, ShardsUnknown

pytestmark = pytest.mark.integration

JOBS = ("collect.positions.exchange-a", "collect.balances.exchange-a")
COUNT = 16


def _owners(engine: Engine) -> dict[tuple[str, int], str | None]:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT job_id, shard, holder FROM collection_shards"))
        return {(str(j), int(s)): h for j, s, h in found}


def _replica(engine: Engine, name: str, ttl_s: float = 1.0) -> AccountShards:
    shards = AccountShards(engine, holder_id(name), COUNT, ttl_s)
    shards.register(JOBS)
    return shards


def _converge(replicas: list[AccountShards], rounds: int = 3) -> None:
    for _ in range(rounds):  # give-backs of one replica are claimed by the others at their next heartbeat
        for replica in replicas:
            replica.rebalance()


def _assert_partition(replicas: list[AccountShards]) -> None:
    """Every shard of every job held by exactly one replica."""
    for job in JOBS:
        held = [r.held().get(job, frozenset()) for r in replicas]
        assert sorted(s for h in held for s in h) == list(range(COUNT)), (job, held)


def test_a_lone_replica_holds_every_shard_and_a_second_takes_half(fresh_engine: Engine) -> None:
    a = _replica(fresh_engine, "a")
    a.rebalance()
    assert a.held() == {job: frozenset(range(COUNT)) for job in JOBS}
    assert a.claim(JOBS[0])

    b = _replica(fresh_engine, "b")
    b.rebalance()  # present now, but every shard is still a's
    assert not b.claim(JOBS[0])
    _converge([a, b])
    _assert_partition([a, b])
    assert [len(r.held()[JOBS[0]]) for r in (a, b)] == [8, 8]
    owners = _owners(fresh_engine)
    assert set(owners.values()) == {a.holder, b.holder}

    c = _replica(fresh_engine, "c")
    _converge([c, a, b, c])
    _assert_partition([a, b, c])
    assert sorted(len(r.held()[JOBS[1]]) for r in (a, b, c)) == [4, 6, 6]  # ceil(16 / 3) = 6 at most


def test_a_replica_that_stops_renewing_loses_its_shards_to_the_others(fresh_engine: Engine) -> None:
    a, b, c = (_replica(fresh_engine, n) for n in "abc")
    _converge([a, b, c])
    _assert_partition([a, b, c])
    dead = set(c.held()[JOBS[0]])
    assert dead

    time.sleep(1.3)  # c "dies": no heartbeat; its shards and its presence expire on the database clock
    _converge([a, b])
    _assert_partition([a, b])
    assert dead <= a.held()[JOBS[0]] | b.held()[JOBS[0]]
    assert c.holder not in set(_owners(fresh_engine).values())


def test_a_clean_stop_hands_its_shards_over_at_the_next_heartbeat(fresh_engine: Engine) -> None:
    a, b = _replica(fresh_engine, "a", ttl_s=30), _replica(fresh_engine, "b", ttl_s=30)
    _converge([a, b])
    b.release()
    assert b.held() == {}
    a.rebalance()  # no TTL to wait out: b left the replicas table and gave its rows back
    assert a.held() == {job: frozenset(range(COUNT)) for job in JOBS}


def test_concurrent_claims_never_give_one_shard_to_two_replicas(fresh_engine: Engine) -> None:
    replicas = [_replica(fresh_engine, f"r{n}") for n in range(4)]
    for replica in replicas:  # all present before anyone claims: fair share 4 each
        replica.rebalance()
    with fresh_engine.begin() as conn:
        conn.execute(text("UPDATE collection_shards SET holder = NULL, expires_at = now()"))
    barrier = threading.Barrier(len(replicas))
    errors: list[BaseException] = []

    def claim(replica: AccountShards) -> None:
        try:
            barrier.wait()
            replica.rebalance()
        except BaseException as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    for job in JOBS:
        held = [r.held()[job] for r in replicas]
        assert sum(len(h) for h in held) == len(set().union(*held))  # disjoint
        assert all(len(h) <= 4 for h in held)
    owners = _owners(fresh_engine)
    for replica in replicas:
        for job in JOBS:
            assert {s for (j, s), h in owners.items() if j == job and h == replica.holder} == replica.held()[job]


def test_a_run_covers_only_the_accounts_of_the_shards_held(fresh_engine: Engine) -> None:
    a, b = _replica(fresh_engine, "a"), _replica(fresh_engine, "b")
    _converge([a, b])
    accounts = [f"exchange-a-acc-{n}" for n in range(200)]
    mine = a.only(JOBS[0], "exchange-a")(accounts)
    theirs = b.only(JOBS[0], "exchange-a")(accounts)
    assert mine
    assert theirs
    assert sorted(mine + theirs) == sorted(accounts)


def test_while_the_heartbeat_fails_a_claim_raises_instead_of_skipping_quietly(fresh_engine: Engine) -> None:
    a = _replica(fresh_engine, "a")
    a.rebalance()
    assert a.claim(JOBS[0])
    with fresh_engine.begin() as conn:  # the table goes away under the replica: the next heartbeat fails
        conn.execute(text("ALTER TABLE collection_shards RENAME TO collection_shards_away"))
    try:
        with pytest.raises(Exception, match="collection_shards"):
            a.rebalance()
        with pytest.raises(ShardsUnknown):
            a.claim(JOBS[0])
        assert a.held() == {}
    finally:
        with fresh_engine.begin() as conn:
            conn.execute(text("ALTER TABLE collection_shards_away RENAME TO collection_shards"))
    a.rebalance()
    assert a.claim(JOBS[0])
