"""A venue that answers garbage, and the loop that fuzzes a running monitor with it.

Shared by the fault test (``tests/faults/test_garbage_venue.py``, ~20 s) and its long form
(``benchmarks/garbage_venue.py``, the issue's 10 minutes): the loop is the same, only the duration differs.
Two sources of garbage at once: a fuzzing exchange on loopback whose every record carries one invalid
field (or whose whole answer is broken), and the sandbox's own malform modes on a real sandbox exchange.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from sandbox import RunningSandbox
from sandbox.faults import MALFORMED_MODES
from tests.faults.conftest import rss_bytes
from tests.processes import Replica, start_replica, wait_for, write_config

VENUE = "fuzz-ex"
ACCOUNTS = ("fuzz-acc-1", "fuzz-acc-2")

WEIRD: tuple[Any, ...] = (
    None, "", "abc", [], {}, True, "NaN", "Infinity", "-Infinity", "1e400", "-1e400", 10**40,
    "9" * 60, "x" * 5000, "\u0000", "😀", -1, "-0.5", 3.5, {"nested": [1, {"a": None}]},
)  # fmt: skip


def _position(rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {
        "symbol": "BTC-USDT",
        "quantity": "1.5",
        "avg_price": "60000",
        "updated_at": "2025-03-01T11:59:58.120Z",
    }
    # One definitely invalid field per record, so none of them may be accepted.
    bad: Any
    key, bad = rng.choice(
        [
            ("symbol", rng.choice([None, "", 123, [], {"a": 1}, "x" * 5000, "\u0000"])),
            ("quantity", rng.choice([None, "abc", [], {}, "NaN", "Infinity", "-Infinity", True, "1e400", "9" * 60])),
            ("avg_price", rng.choice(["-1", "NaN", "abc", None, "Infinity", "1e400"])),
            ("updated_at", rng.choice(["not a date", "9999-12-31T00:00:00Z", 12345, None, ""])),
            ("mark_price", rng.choice(["0", "-5", "NaN", "abc"])),
        ]
    )
    if bad is None and rng.random() < 0.5:
        record.pop(key, None)
    else:
        record[key] = bad
    for _ in range(rng.randrange(3)):  # unknown keys with odd values ride along
        record[f"extra_{rng.randrange(1000)}"] = rng.choice(WEIRD)
    return record


def _balance(rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {"asset": "USDT", "available": "10", "locked": "0", "total": "10"}
    key, bad = rng.choice(
        [
            ("asset", rng.choice([None, "", 5, [], "x" * 5000])),
            ("available", rng.choice(["-1", "abc", None, "NaN", "Infinity", "1e400", []])),
            ("locked", rng.choice(["-3", "abc", "NaN", {}])),
            ("total", rng.choice(["11", "-10", "NaN", "abc"])),
        ]
    )
    record[key] = bad
    return record


def _body(path: str, rng: random.Random) -> bytes:
    if path == "/api/v1/accounts":
        return json.dumps(
            {"accounts": [{"account_id": a, "account_type": "SPOT", "status": "ACTIVE"} for a in ACCOUNTS]}
        ).encode()
    roll = rng.random()
    if roll < 0.1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))  # not even text
    if roll < 0.2:
        return json.dumps(rng.choice(WEIRD)).encode()  # JSON, but no envelope
    if roll < 0.25:
        return b'{"account_id": "fuzz-acc-1", "positions": [{"symbol": '  # truncated
    account = path.split("/")[4] if path.count("/") >= 5 else "?"
    envelope: dict[str, Any] = {"account_id": account, "as_of": "2025-03-01T12:00:00.000Z"}
    if roll < 0.3:
        envelope["as_of"] = rng.choice(["9999-01-01T00:00:00Z", "yesterday", None])
    if path.endswith("/positions"):
        envelope["positions"] = [_position(rng) for _ in range(rng.randrange(1, 20))]
    else:
        envelope["balances"] = [_balance(rng) for _ in range(rng.randrange(1, 20))]
    return json.dumps(envelope).encode()


@contextmanager
def fuzz_venue() -> Iterator[str]:
    """A fuzzing exchange on loopback; yields its base URL."""
    rng = random.Random(20261122)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with lock:
                body = _body(self.path.split("?", 1)[0], rng)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def start_fuzzed_monitor(
    sandbox: RunningSandbox, venue_url: str, database_url: str, tmp_path: Path, *, interval_s: float
) -> Replica:
    """A `serve` process collecting every sandbox venue and the fuzzing one every ``interval_s``."""
    config = write_config(
        tmp_path / "rm.toml",
        sandbox,
        database={"url": database_url, "pool_size": 3},
        evaluation={"interval_s": 1.0},
        collection={"positions_interval_s": interval_s, "balances_interval_s": interval_s},
    )
    with config.open("a") as fh:
        fh.write(f'[[venues]]\nid = "{VENUE}"\nkind = "exchange"\nurl = "{venue_url}"\n')
    return start_replica("fuzzed", config, tmp_path)


def succeeded_runs(db: Engine, venue: str, kind: str) -> int:
    with db.connect() as conn:
        query = "SELECT count(*) FROM collection_runs WHERE venue_id = :v AND kind = :k AND status = 'succeeded'"
        return int(conn.scalar(text(query), {"v": venue, "k": kind}) or 0)


@dataclass
class FuzzRun:
    """What a fuzzing run measured of the monitor process."""

    rss_start: int
    rss_end: int
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds into the run, RSS bytes)
    healthy_runs: int = 0  # succeeded position runs of an unaffected venue during the run


def fuzz(
    replica: Replica,
    sandbox: RunningSandbox,
    db: Engine,
    duration_s: float,
    *,
    sample_every_s: float = 15.0,
    on_sample: Callable[[float, int], None] = lambda _t, _rss: None,
) -> FuzzRun:
    """Warm up, then for ``duration_s`` inject the sandbox's malform modes on exchange-a (the fuzzing venue
    answers garbage all along), asserting the process stays alive; RSS sampled every ``sample_every_s``."""
    wait_for(lambda: succeeded_runs(db, "exchange-b", "positions") >= 3, 30, "collection running")
    time.sleep(3)  # warm-up: pools, caches and connections are allocated before the baseline
    run = FuzzRun(rss_bytes(replica.proc.pid), 0)
    healthy_before = succeeded_runs(db, "exchange-b", "positions")
    rng = random.Random(7)
    started = time.monotonic()
    next_sample = started + sample_every_s
    while (now := time.monotonic()) < started + duration_s:
        sandbox.malform("exchange-a", rng.choice(MALFORMED_MODES), count=rng.randrange(1, 4))
        time.sleep(0.3)
        assert replica.proc.poll() is None, replica.tail()
        if now >= next_sample:
            rss = rss_bytes(replica.proc.pid)
            run.rss_samples.append((now - started, rss))
            on_sample(now - started, rss)
            next_sample += sample_every_s
    run.rss_end = rss_bytes(replica.proc.pid)
    run.healthy_runs = succeeded_runs(db, "exchange-b", "positions") - healthy_before
    return run


@dataclass(frozen=True)
class GarbageCounts:
    runs: int  # collection runs against the fuzzing venue
    rejected_counted: int  # sum of records_rejected over those runs
    failed_without_error: int  # failed runs with no stated error (must be 0)
    stored: int  # rejected_records rows of the fuzzing venue
    without_reason: int  # ... of which without a reason (must be 0)
    accepted: int  # snapshot rows of the fuzzing venue (must be 0: every record had an invalid field)
    sandbox_rejections: int  # rejected_records of the sandbox exchange's malformed answers
    failed_runs: int  # runs of the fuzzing venue that failed as a whole (broken answers)


def garbage_counts(db: Engine) -> GarbageCounts:
    with db.connect() as conn:
        runs, rejected_counted, failed_without_error, failed = conn.execute(
            text(
                "SELECT count(*), coalesce(sum(records_rejected), 0),"
                " count(*) FILTER (WHERE status = 'failed' AND coalesce(error, '') = ''),"
                " count(*) FILTER (WHERE status = 'failed')"
                " FROM collection_runs WHERE venue_id = :v"
            ),
            {"v": VENUE},
        ).one()
        stored, without_reason = conn.execute(
            text(
                "SELECT count(*), count(*) FILTER (WHERE coalesce(reason, '') = '') FROM rejected_records"
                " WHERE venue_id = :v"
            ),
            {"v": VENUE},
        ).one()
        accepted = conn.scalar(
            text(
                "SELECT (SELECT count(*) FROM position_snapshots p JOIN accounts a ON a.id = p.account_id"
                "        WHERE a.venue_id = :v)"
                "     + (SELECT count(*) FROM balance_snapshots b JOIN accounts a ON a.id = b.account_id"
                "        WHERE a.venue_id = :v)"
            ),
            {"v": VENUE},
        )
        sandbox_rejections = conn.scalar(
            text("SELECT count(*) FROM rejected_records WHERE venue_id = 'exchange-a' AND reason <> ''")
        )
    return GarbageCounts(
        int(runs),
        int(rejected_counted),
        int(failed_without_error),
        int(stored),
        int(without_reason),
        int(accepted or 0),
        int(sandbox_rejections or 0),
        int(failed),
    )
