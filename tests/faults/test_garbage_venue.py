"""A venue answering garbage for ~20 s: no crash, every bad record rejected with a reason, memory flat.

The issue asks for 10 minutes of fuzzing; this is its shortened form for the suite (the loop is the same,
only ``FUZZ_S`` differs). Two sources of garbage at once: a fuzzing exchange on loopback whose every
record carries one invalid field (or whose whole answer is broken), and the sandbox's own malform modes
on a real sandbox exchange.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from sandbox import RunningSandbox
from sandbox.faults import MALFORMED_MODES
from tests.faults.conftest import rss_bytes
from tests.processes import start_replica, wait_for, write_config

pytestmark = pytest.mark.integration

FUZZ_S = 20.0
INTERVAL_S = 0.2
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
    field, bad = rng.choice(
        [
            ("symbol", rng.choice([None, "", 123, [], {"a": 1}, "x" * 5000, "\u0000"])),
            ("quantity", rng.choice([None, "abc", [], {}, "NaN", "Infinity", "-Infinity", True, "1e400", "9" * 60])),
            ("avg_price", rng.choice(["-1", "NaN", "abc", None, "Infinity", "1e400"])),
            ("updated_at", rng.choice(["not a date", "9999-12-31T00:00:00Z", 12345, None, ""])),
            ("mark_price", rng.choice(["0", "-5", "NaN", "abc"])),
        ]
    )
    if bad is None and rng.random() < 0.5:
        record.pop(field, None)
    else:
        record[field] = bad
    for _ in range(rng.randrange(3)):  # unknown keys with odd values ride along
        record[f"extra_{rng.randrange(1000)}"] = rng.choice(WEIRD)
    return record


def _balance(rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {"asset": "USDT", "available": "10", "locked": "0", "total": "10"}
    field, bad = rng.choice(
        [
            ("asset", rng.choice([None, "", 5, [], "x" * 5000])),
            ("available", rng.choice(["-1", "abc", None, "NaN", "Infinity", "1e400", []])),
            ("locked", rng.choice(["-3", "abc", "NaN", {}])),
            ("total", rng.choice(["11", "-10", "NaN", "abc"])),
        ]
    )
    record[field] = bad
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


@pytest.fixture
def fuzz_venue() -> Iterator[str]:
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
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _succeeded(db: Engine, venue: str, kind: str) -> int:
    with db.connect() as conn:
        query = "SELECT count(*) FROM collection_runs WHERE venue_id = :v AND kind = :k AND status = 'succeeded'"
        return int(conn.scalar(text(query), {"v": venue, "k": kind}) or 0)


def test_a_venue_answering_garbage_is_survived_with_every_bad_record_rejected(
    sandbox: RunningSandbox, fuzz_venue: str, fresh_database_url: str, db: Engine, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "rm.toml",
        sandbox,
        database={"url": fresh_database_url, "pool_size": 3},
        evaluation={"interval_s": 1.0},
        collection={"positions_interval_s": INTERVAL_S, "balances_interval_s": INTERVAL_S},
    )
    with config.open("a") as fh:
        fh.write(f'[[venues]]\nid = "fuzz-ex"\nkind = "exchange"\nurl = "{fuzz_venue}"\n')
    replica = start_replica("fuzzed", config, tmp_path)
    try:
        wait_for(lambda: _succeeded(db, "exchange-b", "positions") >= 3, 30, "collection running")
        time.sleep(3)  # warm-up: pools, caches and connections are allocated before the baseline
        rss_start = rss_bytes(replica.proc.pid)
        healthy_before = _succeeded(db, "exchange-b", "positions")
        rng = random.Random(7)
        deadline = time.monotonic() + FUZZ_S
        while time.monotonic() < deadline:
            sandbox.malform("exchange-a", rng.choice(MALFORMED_MODES), count=rng.randrange(1, 4))
            time.sleep(0.3)
            assert replica.proc.poll() is None, replica.tail()
        rss_end = rss_bytes(replica.proc.pid)
        assert replica.get("/api/v1/ready")[0] == 200
        # An unaffected venue kept collecting through it.
        assert _succeeded(db, "exchange-b", "positions") >= healthy_before + FUZZ_S / INTERVAL_S / 4
        # Generous bound: growth of a leak per bad answer (hundreds of them) would exceed it.
        assert rss_end - rss_start < 40 * 2**20, (rss_start, rss_end)
    finally:
        assert replica.stop() == 0

    with db.connect() as conn:
        runs, rejected_counted, failed_without_error = conn.execute(
            text(
                "SELECT count(*), coalesce(sum(records_rejected), 0),"
                " count(*) FILTER (WHERE status = 'failed' AND coalesce(error, '') = '')"
                " FROM collection_runs WHERE venue_id = 'fuzz-ex'"
            )
        ).one()
        stored, without_reason = conn.execute(
            text(
                "SELECT count(*), count(*) FILTER (WHERE coalesce(reason, '') = '') FROM rejected_records"
                " WHERE venue_id = 'fuzz-ex'"
            )
        ).one()
        accepted = conn.scalar(
            text(
                "SELECT (SELECT count(*) FROM position_snapshots p JOIN accounts a ON a.id = p.account_id"
                "        WHERE a.venue_id = 'fuzz-ex')"
                "     + (SELECT count(*) FROM balance_snapshots b JOIN accounts a ON a.id = b.account_id"
                "        WHERE a.venue_id = 'fuzz-ex')"
            )
        )
        sandbox_rejections = conn.scalar(
            text("SELECT count(*) FROM rejected_records WHERE venue_id = 'exchange-a' AND reason <> ''")
        )
    assert runs > 20
    assert rejected_counted > 100  # records reached validation (not only broken envelopes)
    assert stored == rejected_counted  # every rejection counted by a run is stored with its payload
    assert without_reason == 0
    assert failed_without_error == 0  # a broken answer fails its run with a stated error
    assert accepted == 0  # every fuzzed record had an invalid field: none may be accepted
    assert sandbox_rejections > 0
