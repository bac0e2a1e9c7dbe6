"""Long-lived worker processes: the heavy work (collection, evaluation, the tick path) runs in child
processes, so the scheduling process's GIL only dispatches and its jobs start on time
(docs/performance.md, "Soak": one GIL shared by everything was what made the scheduler late).

A worker is built once in its child by a module-level *builder* (``Settings`` -> ``Built``), then runs its
jobs on request: ``WorkerProcess.call(job_id, *args)`` sends the request over a pipe and waits for the
result; requests run concurrently in the child. The child's Prometheus families are rendered by the child at
scrape time (``families()``) and merged into the parent's ``/metrics`` (services/metrics_merge.py).

Faults: a child that dies (SIGKILL, crash) fails the calls in flight with ``WorkerError`` (the scheduler
counts them as failed runs; every job writes in one transaction, so nothing partial is committed) and is
started again on the next call. A call that outlives ``call_timeout_s`` means a wedged child: it is killed
and restarted. When the parent dies, the child reads EOF on its pipe and exits.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import REGISTRY

from services import logs, metrics, metrics_merge, runtime, tracing
from services.config import Settings
from services.errors import RiskMonitorError
from services.metrics_merge import Report

log = logging.getLogger(__name__)

# Families of prometheus_client's default collectors: per process, meaningless summed over processes.
_PROCESS_PREFIXES = ("process_", "python_")


class WorkerError(RiskMonitorError):
    """A call a worker could not answer: the job raised in the child, or the child died or hung."""


@dataclass
class Built:
    """What a builder returns: the jobs the child serves, facts for the parent, and how to close."""

    jobs: Mapping[str, Callable[..., object]]
    info: Mapping[str, object] = field(default_factory=dict)  # e.g. the port of a listener it opened
    close: Callable[[], None] = lambda: None


Builder = Callable[..., Built]  # (settings, *args): a module-level function, the child imports it by reference


# --- the child -----------------------------------------------------------------------------------------


def _child(  # noqa: PLR0917 - multiprocessing passes the target's arguments by position
    conn: Connection, name: str, builder: Builder, settings: Settings, args: tuple[object, ...], threads: int
) -> None:
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runtime.normal()  # a parent in the real-time class (runtime.scheduler_realtime_priority) must not pass it on
    # Bulk work at a lower priority: when the scheduler's or the API's thread wakes, it gets a core first.
    os.nice(min(settings.runtime_worker_nice, 19))
    instance = f"{settings.service_instance}:{name}"
    logs.configure(settings.log_level, settings.log_format, settings.service_name, instance)
    runtime.tune(
        switch_interval_ms=settings.runtime_switch_interval_ms, gc_gen0_threshold=settings.runtime_gc_gen0_threshold
    )
    # The child's own spans (venue calls, evaluation phases) go to the same endpoint, as this instance's worker.
    tracer = tracing.configure(
        settings.tracing_otlp_endpoint,
        service_name=settings.tracing_service_name or settings.service_name,
        instance=instance,
        environment=settings.service_environment,
        sample_ratio=settings.tracing_sample_ratio,
    )
    try:
        _serve(conn, name, builder, settings, args, threads)
    finally:
        tracing.shutdown(tracer)


def _serve(  # noqa: PLR0917 - the child's arguments, passed on
    conn: Connection, name: str, builder: Builder, settings: Settings, args: tuple[object, ...], threads: int
) -> None:
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    try:
        built = builder(settings, *args)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        send(("failed", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return
    runtime.freeze()
    send(("ready", dict(built.info)))
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"worker-{name}")

    def run(request: int, job_id: str, args: tuple[object, ...], carrier: dict[str, str]) -> None:
        try:
            # A child of the parent's "job ..." span (its traceparent came with the request): one trace per run.
            with tracing.span(f"worker {name} {job_id}", kind=tracing.SpanKind.SERVER, parent_headers=carrier):
                result = built.jobs[job_id](*args)
        except BaseException as exc:  # noqa: BLE001 - the parent's scheduler wrapper counts and logs it
            send(("error", request, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            return
        send(("ok", request, result))

    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                # The parent died (SIGKILL, crash): die with it, as one process would. A transaction in
                # flight is rolled back by PostgreSQL when its connection drops; finishing it here would let
                # an orphan write beside the replacement the leases hand the job to.
                log.error("worker %s: the parent process is gone; exiting now", name)
                os._exit(70)
            if message[0] == "run":
                pool.submit(run, *message[1:])
            elif message[0] == "families":
                families = metrics_merge.render(REGISTRY.collect(), skip=_PROCESS_PREFIXES)
                send(("ok", message[1], Report(os.getpid(), families)))
            else:  # "stop"
                break
    finally:
        pool.shutdown(wait=True)  # a running job finishes its transaction
        built.close()


# --- the parent ----------------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """One child process serving the jobs ``builder`` builds. Thread-safe; ``call`` starts it on demand."""

    name: str
    builder: Builder
    settings: Settings
    args: tuple[object, ...] = ()  # the builder's further arguments (picklable)
    threads: int = 8  # concurrent requests in the child
    start_timeout_s: float = 120.0
    call_timeout_s: float = 120.0
    info: Mapping[str, object] = field(default_factory=dict)
    _process: Any = None  # multiprocessing.process.BaseProcess
    _conn: Connection | None = None
    _reader: threading.Thread | None = None  # reads answers; reaps the child (the only joiner of the process)
    _pending: dict[int, Future[object]] = field(default_factory=dict)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)  # state and sends (never held while starting)
    _start_lock: threading.Lock = field(default_factory=threading.Lock)  # one start at a time
    _starts: int = 0
    _stopped: bool = False

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._alive_locked()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child unless it runs, and wait until it has built its jobs (WorkerError if it could not)."""
        with self._start_lock:
            with self._lock:
                if self._stopped:
                    raise WorkerError(f"worker {self.name} is stopped")
                if self._alive_locked():
                    return
            self._spawn()

    def call(self, job_id: str, *args: object, timeout_s: float | None = None) -> object:
        """Run ``job_id`` in the child and return its result; raise WorkerError if it raised or the child died."""
        carrier: dict[str, str] = {}
        tracing.inject(carrier)  # the run's spans in the child join the caller's trace
        future = self._submit(("run", job_id, args, carrier))
        return self._wait(future, job_id, self.call_timeout_s if timeout_s is None else timeout_s)

    def families(self, timeout_s: float) -> Report | None:
        """The child's metric families now, rendered by the child (for the parent's /metrics); None when it is
        not running or does not answer in time."""
        with self._lock:
            if not self._alive_locked():
                return None
        try:
            result = self._submit(("families",), start=False).result(timeout_s)  # a scrape never restarts one
        except (WorkerError, FutureTimeout):
            log.warning("worker %s did not report its metrics within %.1f s", self.name, timeout_s)
            return None
        return result if isinstance(result, Report) else None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the child to finish its running jobs and exit; kill it after ``timeout_s``."""
        with self._lock:
            self._stopped = True
            process, conn, reader = self._process, self._conn, self._reader
            if process is None or conn is None or reader is None:
                return
            with contextlib.suppress(OSError):  # already gone
                conn.send(("stop",))
        reader.join(timeout_s)  # the reader reaps the child when its pipe closes
        if reader.is_alive():
            log.warning("worker %s did not stop within %.0f s; killing it", self.name, timeout_s)
            process.kill()
            reader.join(10)
        conn.close()

    # --- internals ---

    def _alive_locked(self) -> bool:
        # The reader clears _conn when the child's pipe closes (it exited); it alone reaps the child, since
        # a second waitpid (is_alive) racing it could report a reaped child as running.
        return self._process is not None and self._conn is not None

    def _spawn(self) -> None:
        if self._starts:
            metrics.WORKER_RESTARTS.labels(self.name).inc()
            log.warning("worker %s is not running (exit code %s); starting it again", self.name, self._exitcode())
        self._starts += 1
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or locks
        parent, child = context.Pipe()
        process = context.Process(
            target=_child,
            args=(child, self.name, self.builder, self.settings, self.args, self.threads),
            name=f"risk-monitor-{self.name}",
            daemon=True,
        )
        process.start()
        child.close()  # only the child holds its end: its death is EOF here
        try:
            answer = self._ready(parent, process)
        except WorkerError:
            parent.close()
            raise
        pending: dict[int, Future[object]] = {}  # this child's calls: its predecessor's EOF must not fail them
        reader = threading.Thread(
            target=self._read, args=(parent, process, pending), name=f"worker-{self.name}-reader", daemon=True
        )
        with self._lock:
            self._process, self._conn, self.info, self._pending, self._reader = (
                process,
                parent,
                answer[1],
                pending,
                reader,
            )
        reader.start()
        log.info("worker %s started (pid %d)", self.name, process.pid)

    def _ready(self, parent: Connection, process: Any) -> tuple[Any, ...]:
        """The child's "ready" message, or WorkerError with why it did not start."""
        if not parent.poll(self.start_timeout_s):
            process.kill()
            process.join(5)
            raise WorkerError(f"worker {self.name} did not start within {self.start_timeout_s:.0f} s")
        try:
            answer: tuple[Any, ...] = parent.recv()
        except EOFError:
            process.join(5)
            raise WorkerError(f"worker {self.name} exited while starting (exit code {process.exitcode})") from None
        if answer[0] != "ready":
            process.join(5)
            log.error("worker %s could not start:\n%s", self.name, answer[2])
            raise WorkerError(f"worker {self.name} could not start: {answer[1]}")
        return answer

    def _exitcode(self) -> int | None:
        return self._process.exitcode if self._process is not None else None

    def _submit(self, message: tuple[object, ...], *, start: bool = True) -> Future[object]:
        future: Future[object] = Future()
        if start:
            self.start()
        with self._lock:
            if self._conn is None:
                raise WorkerError(f"worker {self.name} exited")
            self._next += 1
            self._pending[self._next] = future
            try:
                self._conn.send((message[0], self._next, *message[1:]))
            except OSError as exc:
                self._pending.pop(self._next, None)
                raise WorkerError(f"worker {self.name}: {exc}") from None
        return future

    def _wait(self, future: Future[object], job_id: str, timeout_s: float) -> object:
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            log.error("worker %s: %s ran past %.0f s; killing the worker", self.name, job_id, timeout_s)
            self._kill()
            raise WorkerError(f"worker {self.name}: {job_id} ran past {timeout_s:.0f} s") from None

    def _kill(self) -> None:
        with self._lock:
            process, reader = (self._process, self._reader) if self._conn is not None else (None, None)
        if process is not None and reader is not None:
            process.kill()
            reader.join(10)  # it sees EOF, fails what is in flight and reaps: the next call starts a new child

    def _read(self, conn: Connection, process: Any, pending: dict[int, Future[object]]) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # any unreadable message: which call it answered is unknown
                # E.g. a result whose class the parent cannot load (its code changed under a running serve).
                # Left alone, this reader would die and every later call would wait for its timeout.
                log.exception("worker %s sent a message this process cannot read; killing it", self.name)
                process.kill()
                break
            with self._lock:
                future = pending.pop(message[1], None)
            if future is None:
                continue
            if message[0] == "ok":
                future.set_result(message[2])
            else:
                log.debug("worker %s job failed:\n%s", self.name, message[3])
                future.set_exception(WorkerError(message[2]))
        process.join(5)
        with self._lock:
            failed = list(pending.values())
            pending.clear()
            if self._conn is conn:
                self._conn = None
        if failed and not self._stopped:
            log.error("worker %s exited (code %s) with %d calls in flight", self.name, process.exitcode, len(failed))
        for future in failed:
            future.set_exception(WorkerError(f"worker {self.name} exited (code {process.exitcode})"))


@dataclass(frozen=True)
class RemoteJob:
    """A scheduled job's function that runs ``job_id`` in a worker. ``args`` is called at each run (in the
    parent) for the request's arguments, e.g. the account shards this replica holds now."""

    worker: WorkerProcess
    job_id: str
    args: Callable[[], tuple[object, ...]] = tuple
    on_result: Callable[[object], None] | None = None

    def __call__(self) -> object:
        result = self.worker.call(self.job_id, *self.args())
        if self.on_result is not None:
            self.on_result(result)
        return result


def start_all(workers: Mapping[str, WorkerProcess]) -> None:
    """Start several workers at once (their start-ups overlap: each imports and builds on its own); each
    start is bounded by its ``start_timeout_s``. Raises the first failure after every start has ended."""
    errors: list[BaseException] = []

    def start(worker: WorkerProcess) -> None:
        try:
            worker.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after every start finished
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(w,), name=f"start-{n}") for n, w in workers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
