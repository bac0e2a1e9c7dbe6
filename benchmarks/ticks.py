"""StreamTicks and CheckOrder over loopback gRPC, next to a bare echo bidi stream measured in the same run.

    python benchmarks/ticks.py [--accounts 1000] [--symbols 20] [--batch 100] [--window 32] [--seconds 5]

The servers run in a child process (as the monitor would; client and server don't share a GIL): the real
servicer and LiveRisk, no database (tick-path alert changes go to a writer whose persist is a no-op, so
this measures the stream, not PostgreSQL), and an echo service that parses each TickBatch and sends it
back (same message sizes, no risk work). The state: N accounts, each with 3 spot positions among
--symbols symbols, a balance, and four per-account limits (gross, leverage, position notional, net
notional). Ticks are price updates of random symbols, a ±5 bp random walk. With 20 symbols a batch of 100
touches most accounts (the expensive case). Figures: docs/performance.md, section "gRPC".
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import _support  # noqa: F401  (puts the project and proto/ on sys.path)
import grpc
from riskmonitor.v1 import risk_monitor_pb2 as pb
from riskmonitor.v1 import risk_monitor_pb2_grpc as pb_grpc

from models.risk import AccountMeta, Balance, Limit, LimitType, Position, Price, build_book
from services.alert_watch import AlertEventPoller
from services.live_risk import LiveRisk
from services.rpc.server import build_server
from services.rpc.servicer import RiskMonitorServicer
from services.tick_alerts import TickAlertWriter

NOW = datetime.now(UTC)
SYMBOLS: list[str] = []  # set by --symbols (20: every batch moves most accounts; 2000: a few percent)
ECHO_METHOD = "/bench.Echo/Echo"


def _use_symbols(count: int) -> None:
    SYMBOLS[:] = [f"C{i:04d}-USDT" for i in range(count)]


def _state(accounts: int) -> tuple[Any, list[Limit]]:
    rng = random.Random(7)
    metas, positions, balances = [], [], []
    for i in range(accounts):
        key = f"bench:a{i:04d}"
        metas.append(AccountMeta(key, "bench"))
        balances.append(Balance("bench", key, "USDT", Decimal(100_000), Decimal(0), Decimal(100_000), NOW))
        for symbol in rng.sample(SYMBOLS, 3):
            qty = Decimal(rng.randint(-50, 50) or 1)
            positions.append(Position("bench", key, symbol, qty, Decimal(100), NOW))
    prices = [Price(s, Decimal(100), NOW, "md") for s in SYMBOLS] + [Price("USDT-USD", Decimal(1), NOW, "md")]
    limits = [
        Limit("gross", LimitType.GROSS_NOTIONAL, warn=Decimal(14_000), critical=Decimal(16_000), per_account=True),
        Limit("leverage", LimitType.LEVERAGE, warn=Decimal(3), critical=Decimal(5), per_account=True),
        Limit("pos", LimitType.POSITION_NOTIONAL, warn=Decimal(5_000), critical=Decimal(6_000), per_account=True),
        Limit("net", LimitType.NET_NOTIONAL, warn=Decimal(9_000), critical=Decimal(12_000), per_account=True),
    ]
    return build_book(accounts=metas, positions=positions, balances=balances, prices=prices), limits


def _monitor(accounts: int) -> tuple[grpc.Server, int, TickAlertWriter]:
    book, limits = _state(accounts)
    writer = TickAlertWriter(lambda _items: None)
    live = LiveRisk(book, limits, NOW, writer)
    poller = AlertEventPoller(lambda _after, _limit: [], start_after=0, interval_s=3600, queue_size=10)
    servicer = RiskMonitorServicer(engine=None, poller=poller, live=live, acknowledge=None)  # type: ignore[arg-type]
    registration = (lambda s: pb_grpc.add_RiskMonitorServiceServicer_to_server(servicer, s), "riskmonitor.v1")
    server, _, port = build_server("127.0.0.1:0", [registration], max_workers=8)
    server.start()
    writer.start()
    return server, port, writer


def _echo_server() -> tuple[grpc.Server, int]:
    """A bidi stream that parses each TickBatch and sends it straight back: same sizes, no risk work."""

    def echo(requests: Iterator[pb.TickBatch], _context: grpc.ServicerContext) -> Iterator[pb.TickBatch]:
        yield from requests

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.stream_stream_rpc_method_handler(
                echo, request_deserializer=pb.TickBatch.FromString, response_serializer=pb.TickBatch.SerializeToString
            )
        },
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _batches(size: int, rng: random.Random) -> Iterator[pb.TickBatch]:
    """Price ticks of random symbols, each a random walk of ±5 bp per tick (so some limits flip, not all)."""
    last = dict.fromkeys(SYMBOLS, 100.0)
    n = 0
    while True:
        n += 1
        ticks = []
        for _ in range(size):
            symbol = rng.choice(SYMBOLS)
            last[symbol] *= 1 + rng.choice((-0.0005, 0.0005))
            ticks.append(pb.Tick(price=pb.PriceUpdate(symbol=symbol, price=f"{last[symbol]:.4f}", source="md")))
        yield pb.TickBatch(batch_id=n, ticks=ticks)


def _drive(call: Any, size: int, seconds: float, rate: float | None, window: int = 32) -> tuple[float, list[float]]:
    """Stream batches for ``seconds``. ``rate`` (batches/s) paces them; None sends as fast as the window of
    ``window`` unanswered batches allows. Round trip per batch: sent -> its answer received."""
    rng = random.Random(1)
    batches = [b for b, _ in zip(_batches(size, rng), range(2000), strict=False)]  # built once: not timed
    sent_at: dict[int, float] = {}
    credit = threading.Semaphore(window if rate is None else 1_000_000)
    stop = threading.Event()

    def requests() -> Iterator[pb.TickBatch]:
        n = 0
        next_at = time.perf_counter()
        while not stop.is_set():
            if rate is not None:
                next_at += 1 / rate
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            if not credit.acquire(timeout=1):
                continue
            n += 1
            batch = batches[n % len(batches)]  # (the walk restarts every 2000 batches: a jump, rarely)
            batch.batch_id = n
            sent_at[n] = time.perf_counter()
            yield batch

    rtts: list[float] = []
    responses = call(requests())
    started = time.perf_counter()
    for response in responses:
        rtts.append(time.perf_counter() - sent_at.pop(response.batch_id))
        credit.release()
        if time.perf_counter() - started >= seconds:
            break
    elapsed = time.perf_counter() - started
    stop.set()
    responses.cancel()
    return len(rtts) * size / elapsed, rtts


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) >= 2 else values[0] * 1000


def _serve(accounts: int) -> None:
    """Child process: both servers, ports on stdout, until stdin closes."""
    monitor, port, writer = _monitor(accounts)
    echo, echo_port = _echo_server()
    print(port, echo_port, flush=True)
    sys.stdin.read()
    writer.stop()
    monitor.stop(0).wait()
    echo.stop(0).wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=32, help="unanswered batches in flight at full speed")
    parser.add_argument("--symbols", type=int, default=20, help="symbols ticked; each account holds 3 of them")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _use_symbols(args.symbols)
    if args.serve:
        _serve(args.accounts)
        return

    # The servers run in their own process, as the monitor does: client and server don't share a GIL.
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--accounts", str(args.accounts), "--symbols", str(args.symbols)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    port, echo_port = map(int, child.stdout.readline().split())
    try:
        _client(args, port, echo_port)
    finally:
        child.stdin.close()
        child.wait(30)


def _report(label: str, rate: float, rtts: list[float], unit: str = "ticks/s") -> None:
    print(f"{label:<17}{rate:>10,.0f} {unit:<8}  rtt p50 {_pct(rtts, 50):6.2f} ms  p99 {_pct(rtts, 99):6.2f} ms")


def _client(args: argparse.Namespace, port: int, echo_port: int) -> None:
    paced = 10_000 / args.batch  # batches/s for 10k ticks/s offered
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, grpc.insecure_channel(f"127.0.0.1:{echo_port}") as ech:
        stub = pb_grpc.RiskMonitorServiceStub(ch)
        echo_call = ech.stream_stream(
            ECHO_METHOD,
            request_serializer=pb.TickBatch.SerializeToString,
            response_deserializer=pb.TickBatch.FromString,
        )
        _drive(stub.StreamTicks, args.batch, 1.0, None)  # warm-up (grpc channels, caches)
        _drive(echo_call, args.batch, 1.0, None)
        print(f"accounts {args.accounts}, symbols {args.symbols}, batches of {args.batch} ticks, window {args.window}")
        echo_rate, echo_rtts = _drive(echo_call, args.batch, args.seconds, None, args.window)
        rate, rtts = _drive(stub.StreamTicks, args.batch, args.seconds, None, args.window)
        _report("echo ceiling", echo_rate, echo_rtts)
        _report("StreamTicks max", rate, rtts)
        print(f"ratio             {rate / echo_rate:.3f} of the echo ceiling")
        _report("echo @10k", *_drive(echo_call, args.batch, args.seconds, paced))
        _report("StreamTicks @10k", *_drive(stub.StreamTicks, args.batch, args.seconds, paced))

        orders = []
        rng = random.Random(3)
        for _ in range(2000):
            request = pb.CheckOrderRequest(
                account=f"bench:a{rng.randrange(args.accounts):04d}",
                symbol=rng.choice(SYMBOLS),
                side=rng.choice([pb.ORDER_SIDE_BUY, pb.ORDER_SIDE_SELL]),
                quantity=str(rng.randint(1, 40)),
                price="100",
            )
            sent = time.perf_counter()
            stub.CheckOrder(request, timeout=10)
            orders.append(time.perf_counter() - sent)
        _report("CheckOrder", len(orders) / sum(orders), orders, "calls/s")


if __name__ == "__main__":
    main()
