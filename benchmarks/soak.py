"""Soak: a real Monitor at 1k accounts x 10 positions, 1 s collection and evaluation, and a 5k ticks/s stream.

    .venv/bin/python benchmarks/soak.py [--duration 600] [--accounts 1000] [--ticks-per-s 5000] [--idle-s 20]
                                        [--batch 100] [--realtime 10] [--in-process] [--scrape-every 15]

The monitor runs as `serve` runs it: a scheduling process (this one) and its three worker processes
(collection, evaluation, the tick path; ``runtime.workers``), whose RSS and CPU are added to this process's.
``--realtime N`` is ``runtime.scheduler_realtime_priority`` (the scheduler's threads in SCHED_RR at priority
N; 0: the normal class; the idle baseline's scheduler is started the same way); ``--in-process`` runs
everything in one process.

The venues are read through their batched endpoints, ``--batch`` accounts per request (0: one request per
account, which at 1k accounts is ~4k requests/s and more CPU than one process has; docs/performance.md).

The sandbox venues run in a child process (`python -m sandbox`, ten traded symbols, every account traded
into about ten positions before the monitor starts), and so does the tick client (a `StreamTicks` stream of
price ticks in batches of 100 at ``--ticks-per-s``), so this process's CPU time and RSS are the monitor's
alone. A probe job on the monitor's own scheduler (default pool, every 0.5 s) measures scheduler lateness:
actual start - scheduled time. The same probe first runs on an idle scheduler for ``--idle-s`` seconds in
the same process: the loaded figure is read against that baseline. Reported: RSS at start (after warm-up)
and end, lateness p50/p99/max idle vs loaded, missed and failed runs per job, CPU share (process CPU
seconds / wall seconds), the garbage collector's passes, how many collections and evaluations ran, and the
tick stream's achieved rate and round trips. The monitor's interpreter is tuned as `serve` tunes it
(services/runtime.py) unless ``--python-defaults``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from _support import ROOT, benchmark_database
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text

from jobs import schedule
from services import database, runtime
from services.app import Monitor
from services.config import Settings
from services.venue_settings import VenueSettings

PROBE_S = 0.5
TICK_BATCH = 100
# Ten traded symbols (each account ends up holding most of them) and the stablecoin reference.
PRICES = {
    "BTC-USDT": "60000",
    "ETH-USDT": "3000",
    "SOL-USDT": "150",
    "XRP-USDT": "0.6",
    "ADA-USDT": "0.45",
    "DOGE-USDT": "0.15",
    "AVAX-USDT": "35",
    "DOT-USDT": "7",
    "LINK-USDT": "15",
    "LTC-USDT": "80",
    "USDT-USD": "1",
}
LIMITS = """
[[limit]]
name = "account-leverage"
type = "leverage"
per_account = true
warn = "3"
critical = "5"

[[limit]]
name = "firm-gross"
type = "gross_notional"
warn = "40000000"
critical = "50000000"
"""


class GcPauses:
    """CPU time of the cyclic garbage collector's runs per generation (gc.callbacks; the collecting thread's
    CPU clock, since wall time would also count other threads that take the GIL between the callbacks): a
    collection holds the GIL for its whole length, so it shows up directly as scheduler lateness."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.pauses[info["generation"]].append(time.thread_time() - self._started)

    def reset(self) -> None:
        self.pauses = {0: [], 1: [], 2: []}

    def summary(self) -> dict[str, str]:
        def one(v: list[float]) -> str:
            if not v:
                return "0 runs"
            p99 = sorted(v)[min(len(v) - 1, int(0.99 * len(v)))]
            return f"{len(v)} runs, p99 {p99 * 1000:.1f} ms, max {max(v) * 1000:.1f} ms, total {sum(v):.2f} s"

        return {f"gen{g}": one(v) for g, v in self.pauses.items()}


class Probe:
    """A job that records how late it starts against its own fixed grid (lateness < PROBE_S)."""

    def __init__(self) -> None:
        self.anchor = 0.0
        self.lateness: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> None:
        late = (time.time() - self.anchor) % PROBE_S
        with self._lock:
            self.lateness.append(late)

    def reset(self, anchor: float) -> None:
        with self._lock:
            self.anchor = anchor
            self.lateness = []

    def summary(self) -> dict[str, float]:
        with self._lock:
            values = sorted(self.lateness)
        if not values:
            return {"runs": 0}

        def pct(q: float) -> float:
            return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)

        return {"runs": len(values), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(values[-1] * 1000, 2)}


def run_probe(scheduler: BackgroundScheduler, probe: Probe, seconds: float) -> dict[str, float]:
    first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    probe.reset(first.timestamp())
    scheduler.add_job(probe, "interval", seconds=PROBE_S, id="probe", next_run_time=first, replace_existing=True)
    time.sleep(seconds + 2)
    scheduler.remove_job("probe")
    return probe.summary()


def evaluation_phases(body: str) -> dict[str, float]:
    """Cumulative (sum, count) of the evaluation's phases in one /metrics body."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        if family.name == "risk_monitor_evaluation_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith(("_sum", "_count")):
                    out[f"{sample.labels['phase']}:{sample.name.rsplit('_', 1)[1]}"] = sample.value
    return out


def scraper(port: int, every_s: float, seconds: float) -> None:
    """Scrape /metrics every ``every_s`` as Prometheus would, from its own process (the parsing must not load the
    monitor's); print one JSON line: scrape times and size, and the evaluation's phase totals once a minute."""
    times: list[float] = []
    size = 0
    phases: list[dict[str, float]] = []
    started = time.monotonic()
    for n in itertools.count():
        delay = started + n * every_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() - started > seconds:
            break
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            body = answer.read()
        times.append(time.perf_counter() - t0)
        size = len(body)
        if n % max(1, round(60 / every_s)) == 0:
            phases.append(evaluation_phases(body.decode()))
    ms = sorted(t * 1000 for t in times) or [0.0]
    print(
        json.dumps(
            {
                "scrapes": len(times),
                "every_s": every_s,
                "p50_ms": round(ms[len(ms) // 2], 1),
                "max_ms": round(ms[-1], 1),
                "bytes": size,
                "phases": phases,
            }
        ),
        flush=True,
    )


def phase_means(timeline: list[dict[str, float]]) -> list[str]:
    """Per minute: mean read / compute / write / total of the passes in that minute (ms)."""
    lines = []
    for minute, (before, after) in enumerate(itertools.pairwise(timeline), start=2):
        means = []
        for phase in ("read", "compute", "write", "total"):
            n = after.get(f"{phase}:count", 0.0) - before.get(f"{phase}:count", 0.0)
            total = after.get(f"{phase}:sum", 0.0) - before.get(f"{phase}:sum", 0.0)
            means.append(f"{phase} {total / n * 1000:.0f}" if n else f"{phase} -")
        lines.append(f"  minute {minute}: " + ", ".join(means) + " ms")
    return lines


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process (the sandbox), from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def worker_pids(monitor: Monitor) -> dict[str, int]:
    return {name: w.pid for name, w in monitor.workers.items() if w.pid is not None}


def monitor_rss(monitor: Monitor) -> float:
    """The monitor's RSS: this process and its worker processes (runtime.workers)."""
    return rss_mb() + sum(rss_mb(pid) for pid in worker_pids(monitor).values())


def counter_total(name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == name:
                job = sample.labels.get("job", "")
                out[job] = out.get(job, 0.0) + sample.value
    return out


def start_sandbox(accounts: int, tmp: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    cfg = tmp / "sandbox.json"
    per_exchange = accounts // 2
    cfg.write_text(
        json.dumps({"accounts_per_exchange": per_exchange, "step_interval": 1.0, "seed": 3, "prices": PRICES})
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'proto'}"},
    )
    assert proc.stdout is not None
    where = json.loads(proc.stdout.readline())
    # About 30 trades per account over ten symbols: ~10 positions each before the monitor starts.
    request = urllib.request.Request(
        f"{where['control']}/control/step",
        data=json.dumps({"n": 100}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as answer:
        answer.read()
    return proc, where


# --- the tick stream (a child process: its CPU is not the monitor's) --------------------------------------


def tick_client(port: int, rate: float, seconds: float) -> None:
    """Stream price ticks at ``rate`` ticks/s in batches of TICK_BATCH; print one JSON line of figures."""
    from riskmonitor.v1 import risk_monitor_pb2 as pb
    from riskmonitor.v1 import risk_monitor_pb2_grpc as pb_grpc

    rng = random.Random(5)
    last = {s: float(p) for s, p in PRICES.items() if s != "USDT-USD"}
    symbols = sorted(last)
    sent_at: dict[int, float] = {}
    stop = threading.Event()

    def batches() -> Iterator[pb.TickBatch]:
        n, next_at = 0, time.perf_counter()
        while not stop.is_set():
            next_at += TICK_BATCH / rate
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            n += 1
            ticks = []
            for _ in range(TICK_BATCH):
                symbol = rng.choice(symbols)
                last[symbol] *= 1 + rng.choice((-0.0005, 0.0005))
                price = pb.PriceUpdate(symbol=symbol, price=f"{last[symbol]:.6g}", source="ticks")
                ticks.append(pb.Tick(price=price))
            sent_at[n] = time.perf_counter()
            yield pb.TickBatch(batch_id=n, ticks=ticks)

    rtts: list[float] = []
    errors = 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        responses = pb_grpc.RiskMonitorServiceStub(channel).StreamTicks(batches())
        started = time.perf_counter()
        for response in responses:
            rtts.append(time.perf_counter() - sent_at.pop(response.batch_id))
            errors += len(response.errors)
            if time.perf_counter() - started >= seconds:
                break
        elapsed = time.perf_counter() - started
        stop.set()
        responses.cancel()
    cuts = statistics.quantiles(rtts, n=100) if len(rtts) >= 2 else [0.0] * 99
    print(
        json.dumps(
            {
                "ticks_per_s": round(len(rtts) * TICK_BATCH / elapsed),
                "batches": len(rtts),
                "rtt_p50_ms": round(cuts[49] * 1000, 2),
                "rtt_p99_ms": round(cuts[98] * 1000, 2),
                "tick_errors": errors,
            }
        ),
        flush=True,
    )


def finish_child(proc: subprocess.Popen[str] | None) -> dict[str, Any]:
    """The JSON line a child (tick client, scraper) printed last."""
    if proc is None:
        return {"stream": "off"}
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    lines = out.strip().splitlines()
    return json.loads(lines[-1]) if lines else {"exit": proc.returncode}


def start_child(*args: str) -> subprocess.Popen[str]:
    """This script again as a child process (tick client, scraper)."""
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'proto'}"},
    )


def print_rss_parts(start: dict[str, float], end: dict[str, float], per_minute: dict[str, list[int]]) -> None:
    if len(start) > 1:
        parts = {n: f"{start[n]:.0f} -> {end.get(n, 0.0):.0f}" for n in start}
        print(f"RSS per process (MB): {parts}")
        for name, minutes in per_minute.items():
            print(f"  {name} every minute (MB): {minutes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of the loaded phase")
    parser.add_argument("--minutes", type=float, help="the loaded phase in minutes (overrides --duration)")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--ticks-per-s", type=float, default=5000.0, help="tick stream rate (0: no stream)")
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=2, help="collection.concurrency (requests per venue)")
    parser.add_argument("--batch", type=int, default=100, help="accounts per venue request (0: one per account)")
    parser.add_argument("--switch-ms", type=float, default=1.0, help="runtime.switch_interval_ms")
    parser.add_argument("--gc-gen0", type=int, default=0, help="runtime.gc_gen0_threshold (0: Python's)")
    parser.add_argument(
        "--python-defaults", action="store_true", help="skip `serve`'s interpreter tuning (services/runtime.py)"
    )
    parser.add_argument("--in-process", action="store_true", help="runtime.workers off: everything in this one process")
    parser.add_argument(
        "--realtime", type=int, default=Settings.runtime_scheduler_realtime_priority, help="scheduler threads' SCHED_RR"
    )
    parser.add_argument("--worker-nice", type=int, default=0, help="runtime.worker_nice")
    parser.add_argument(
        "--scrape-every", type=float, default=15.0, help="seconds between /metrics scrapes by a separate process"
    )
    parser.add_argument("--tick-client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--scraper", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    duration = args.minutes * 60 if args.minutes is not None else args.duration
    if args.tick_client is not None:
        tick_client(args.tick_client, args.ticks_per_s, duration)
        return
    if args.scraper is not None:
        scraper(args.scraper, args.scrape_every, duration)
        return

    with tempfile.TemporaryDirectory(prefix="rm-soak-") as tmp_dir, benchmark_database() as url:
        tmp = Path(tmp_dir)
        sandbox, where = start_sandbox(args.accounts, tmp)
        try:
            probe = Probe()
            idle = schedule.build_scheduler()
            with runtime.realtime_threads(0 if args.in_process else args.realtime):  # as Monitor.start does
                idle.start()
            idle_lateness = run_probe(idle, probe, args.idle_s)
            idle.shutdown()

            limits = tmp / "limits.toml"
            limits.write_text(LIMITS)
            exchanges = where["exchanges"]
            custodians = where["custodians"]
            assert isinstance(exchanges, dict)
            assert isinstance(custodians, dict)
            batch = args.batch or None
            venues = (
                *(VenueSettings(v, "exchange", url=u, batch=batch) for v, u in exchanges.items()),
                *(VenueSettings(v, "custodian", url=u, batch=batch) for v, u in custodians.items()),
                VenueSettings("market-data", "market_data", target=str(where["market_data"])),
            )
            settings = Settings(
                database_url=url,
                embedded_data_dir=str(tmp / "unused"),
                http_port=0,
                grpc_port=0,
                venues=venues,
                limits_file=str(limits),
                evaluation_interval_s=1.0,
                collection_positions_interval_s=1.0,
                collection_balances_interval_s=1.0,
                collection_prices_interval_s=1.0,
                collection_workers=2,
                collection_concurrency=args.concurrency,
                collection_read_timeout_s=10.0,
                runtime_switch_interval_ms=args.switch_ms,
                runtime_gc_gen0_threshold=args.gc_gen0,
                runtime_workers=not args.in_process,
                runtime_worker_nice=args.worker_nice,
                runtime_scheduler_realtime_priority=args.realtime,
            )
            if not args.python_defaults:  # as `risk-monitor serve` does
                runtime.tune(
                    switch_interval_ms=settings.runtime_switch_interval_ms,
                    gc_gen0_threshold=settings.runtime_gc_gen0_threshold,
                )
            monitor = Monitor(settings)
            monitor.start()
            if not args.python_defaults:
                runtime.freeze()
            try:
                ticks = None
                if args.ticks_per_s > 0:  # runs through warm-up and the loaded phase; reports at its end
                    ticks = start_child(
                        "--tick-client",
                        str(monitor.grpc_port),
                        "--ticks-per-s",
                        str(args.ticks_per_s),
                        "--duration",
                        str(20 + duration),
                    )
                time.sleep(20)  # warm-up: first full collection, first evaluation (opens every alert)
                rss_start = monitor_rss(monitor)
                rss_parts_start = {"scheduler": rss_mb(), **{n: rss_mb(p) for n, p in worker_pids(monitor).items()}}
                pids = worker_pids(monitor)
                workers_cpu_start = {name: cpu_seconds(pid) for name, pid in pids.items()}
                gc_pauses = GcPauses()
                gc.callbacks.append(gc_pauses)
                cpu_start, wall_start = time.process_time(), time.monotonic()
                venues_cpu_start = cpu_seconds(sandbox.pid)
                missed_start = counter_total("risk_monitor_job_missed_total")
                assert monitor.scheduler is not None
                rss_timeline: list[float] = []
                sampling = threading.Event()

                http_port = monitor.http.port if monitor.http is not None else 0
                scrapes = (
                    start_child(
                        "--scraper",
                        str(http_port),
                        "--scrape-every",
                        str(args.scrape_every),
                        "--duration",
                        str(duration),
                    )
                    if args.scrape_every > 0
                    else None
                )

                per_process: dict[str, list[int]] = {}  # every minute: which process a slope would be in

                def sample_rss() -> None:  # a timeline tells a plateau (caches warming) from a leak (a slope)
                    for n in itertools.count(1):
                        if sampling.wait(15):
                            break
                        rss_timeline.append(round(monitor_rss(monitor), 1))
                        if n % 4 == 0:
                            parts = {"scheduler": rss_mb(), **{k: rss_mb(p) for k, p in worker_pids(monitor).items()}}
                            for k, mb in parts.items():
                                per_process.setdefault(k, []).append(round(mb))

                sampler = threading.Thread(target=sample_rss, daemon=True)
                sampler.start()
                loaded_lateness = run_probe(monitor.scheduler, probe, duration)
                gc.callbacks.remove(gc_pauses)
                sampling.set()
                cpu = time.process_time() - cpu_start
                wall = time.monotonic() - wall_start
                venues_cpu = cpu_seconds(sandbox.pid) - venues_cpu_start
                rss_end = monitor_rss(monitor)
                rss_parts_end = {"scheduler": rss_mb(), **{n: rss_mb(p) for n, p in worker_pids(monitor).items()}}
                workers_cpu = {
                    name: cpu_seconds(pid) - workers_cpu_start[name]
                    for name, pid in worker_pids(monitor).items()
                    if pid == pids.get(name)  # a restarted worker's CPU is not comparable
                }
                missed = {
                    job: n - missed_start.get(job, 0.0)
                    for job, n in counter_total("risk_monitor_job_missed_total").items()
                    if n - missed_start.get(job, 0.0) > 0
                }
                failures = counter_total("risk_monitor_job_failures_total")
                runs = counter_total("risk_monitor_job_duration_seconds_count")
                durations = counter_total("risk_monitor_job_duration_seconds_sum")
                tick_figures = finish_child(ticks)
                scrape_figures = finish_child(scrapes)
            finally:
                monitor.stop()
        finally:
            sandbox.terminate()
            sandbox.wait(30)

        engine = create_engine(database.normalize_url(url))
        with engine.connect() as conn:
            positions = conn.scalar(text("SELECT count(*) FROM position_latest"))
            accounts = conn.scalar(text("SELECT count(*) FROM accounts"))
        engine.dispose()

    evaluate_runs = runs.get("evaluate", 0.0)
    print(f"accounts: {accounts}, latest positions: {positions}, loaded phase: {wall:.0f} s")
    model = (
        "one process"
        if args.in_process
        else f"scheduler + worker processes (nice +{args.worker_nice}), scheduler threads SCHED_RR {args.realtime}"
    )
    print(f"process model: {model}")
    grown = rss_end - rss_start
    print(f"RSS (monitor, all processes): {rss_start:.1f} MB after warm-up -> {rss_end:.1f} MB at end ({grown:+.1f})")
    print(f"RSS every 15 s (MB): {rss_timeline}")
    print_rss_parts(rss_parts_start, rss_parts_end, per_process)
    print(f"scheduler lateness idle:   {idle_lateness}")
    print(f"scheduler lateness loaded: {loaded_lateness}")
    if idle_lateness.get("p99_ms") and "p99_ms" in loaded_lateness:
        ratio = loaded_lateness["p99_ms"] / idle_lateness["p99_ms"]
        print(f"lateness p99 loaded/idle: {ratio:.2f}x (target <= 3x)")
    print(f"garbage collector (loaded phase): {gc_pauses.summary()}")
    print(f"CPU share of the scheduling process: {cpu / wall:.1%} of one core ({cpu:.0f} s CPU / {wall:.0f} s wall)")
    for name, seconds in sorted(workers_cpu.items()):
        print(f"CPU share of the {name} worker: {seconds / wall:.1%} of one core")
    total_cpu = cpu + sum(workers_cpu.values())
    print(f"CPU share of the monitor, all its processes: {total_cpu / wall:.1%} of one core")
    print(f"CPU share of the sandbox venues (child process): {venues_cpu / wall:.1%} of one core")
    print(f"load average at the end: {os.getloadavg()}")
    print(f"missed runs during the loaded phase: {missed or 'none'}")
    failed = {job: n for job, n in failures.items() if n}
    print(f"failed runs (whole process life): {failed or 'none'}")
    mean_eval = durations.get("evaluate", 0.0) / evaluate_runs if evaluate_runs else 0.0
    print(f"evaluation runs: {evaluate_runs:.0f}, mean {mean_eval * 1000:.0f} ms")
    tuning = "Python's defaults" if args.python_defaults else "tuned as by serve (services/runtime.py)"
    print(f"interpreter: {tuning}, switch interval {sys.getswitchinterval() * 1000:.2f} ms, gc {gc.get_threshold()}")
    print(f"venue requests: {'one per account' if not args.batch else f'{args.batch} accounts per request'}")
    print(f"tick stream ({args.ticks_per_s:.0f} ticks/s offered, batches of {TICK_BATCH}): {tick_figures}")
    phase_timeline = scrape_figures.pop("phases", [])
    print(f"/metrics scraped by a separate process: {scrape_figures}")
    if len(phase_timeline) > 1:
        print("evaluation phases per minute (mean per pass):")
        print("\n".join(phase_means(phase_timeline)))
    for job in sorted(j for j in runs if j.startswith("collect.")):
        mean = durations.get(job, 0.0) / runs[job] if runs[job] else 0.0
        print(f"  {job}: {runs[job]:.0f} runs, mean {mean * 1000:.0f} ms")


if __name__ == "__main__":
    main()
