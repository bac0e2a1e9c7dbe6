"""The demo's view of the monitor: gRPC calls, a WatchAlerts follower and a /metrics scrape. Nothing else."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import requests
from prometheus_client.parser import text_string_to_metric_families
from riskmonitor.v1 import risk_monitor_pb2 as pb
from riskmonitor.v1 import risk_monitor_pb2_grpc as pb_grpc

_DEADLINE_S = 10.0
SEVERITY = {pb.SEVERITY_WARNING: "warning", pb.SEVERITY_CRITICAL: "critical"}
COMPLIANCE = {
    pb.COMPLIANCE_STATE_COMPLIANT: "compliant",
    pb.COMPLIANCE_STATE_WARNING: "warning",
    pb.COMPLIANCE_STATE_BREACH: "breach",
}
LEVEL = {pb.LEVEL_OK: "ok", pb.LEVEL_WARN: "warn", pb.LEVEL_CRITICAL: "critical"}


@dataclass(frozen=True)
class SeenEvent:
    """An alert event as WatchAlerts delivered it, with the demo's own clock at delivery."""

    event: pb.AlertEvent
    received_at: datetime
    replayed: bool


class AlertFollower:
    """Follows WatchAlerts on a thread, resuming after the last event it saw when the stream breaks."""

    def __init__(self, stub: pb_grpc.RiskMonitorServiceStub) -> None:
        self._stub = stub
        self._events: list[SeenEvent] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._call: grpc.RpcContext | None = None
        self._thread = threading.Thread(target=self._follow, name="demo-watch-alerts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _follow(self) -> None:
        last = 0
        while not self._stopping.is_set():
            call = self._stub.WatchAlerts(pb.WatchAlertsRequest(resume_after_event_id=last))
            self._call = call
            try:
                for response in call:
                    seen = SeenEvent(response.event, datetime.now(UTC), response.replayed)
                    last = max(last, response.event.id)
                    with self._changed:
                        self._events.append(seen)
                        self._changed.notify_all()
            except grpc.RpcError:
                pass  # the monitor restarted or is stopping: resume from `last`
            self._stopping.wait(0.5)

    def count(self) -> int:
        with self._lock:
            return len(self._events)

    def since(self, index: int) -> list[SeenEvent]:
        with self._lock:
            return self._events[index:]

    def latest(self, n: int) -> list[SeenEvent]:
        with self._lock:
            return self._events[-n:]

    def wait(self, timeout: float) -> None:
        """Until a new event arrives or `timeout` passes."""
        with self._changed:
            self._changed.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()
        if self._call is not None:
            self._call.cancel()
        self._thread.join(timeout=5)


class MonitorProbe:
    """Public interfaces only: the riskmonitor.v1 gRPC API and the HTTP listener."""

    def __init__(self, grpc_target: str, http_url: str) -> None:
        self.grpc_target = grpc_target
        self.http_url = http_url.rstrip("/")
        self.channel = grpc.insecure_channel(grpc_target)
        self.stub = pb_grpc.RiskMonitorServiceStub(self.channel)
        self.follower = AlertFollower(self.stub)
        self._http = requests.Session()

    def start(self) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.follower.start()

    def close(self) -> None:
        self.follower.stop()
        self.channel.close()
        self._http.close()

    # -- queries ------------------------------------------------------------------------------------

    def active_alerts(self) -> list[pb.Alert]:
        found: list[pb.Alert] = []
        for state in (pb.ALERT_STATE_OPEN, pb.ALERT_STATE_ACKNOWLEDGED):
            found.extend(self._alerts(pb.ListAlertsRequest(state=state, page_size=1000)))
        return found

    def _alerts(self, request: pb.ListAlertsRequest) -> Iterator[pb.Alert]:
        while True:
            page = self.stub.ListAlerts(request, timeout=_DEADLINE_S)
            yield from page.alerts
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def alert(self, alert_id: int) -> pb.Alert:
        return self.stub.GetAlert(pb.GetAlertRequest(alert_id=alert_id), timeout=_DEADLINE_S).alert

    def acknowledge(self, alert_id: int, comment: str) -> pb.Alert:
        request = pb.AcknowledgeAlertRequest(alert_id=alert_id, actor="demo", comment=comment)
        return self.stub.AcknowledgeAlert(request, timeout=_DEADLINE_S).alert

    def compliance(self) -> dict[str, pb.ComplianceStatus]:
        response = self.stub.GetComplianceStatus(pb.GetComplianceStatusRequest(), timeout=_DEADLINE_S)
        return {s.account: s for s in response.statuses}

    def risk(self, account: str) -> pb.RiskSummary:
        return self.stub.GetRiskSummary(pb.GetRiskSummaryRequest(account=account), timeout=_DEADLINE_S)

    def ticks(self, batches: Sequence[pb.TickBatch]) -> list[pb.TickBatchResult]:
        """One StreamTicks call: send the batches, return one result per batch."""
        return list(self.stub.StreamTicks(iter(batches), timeout=_DEADLINE_S))

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        response = self._http.get(f"{self.http_url}/metrics", timeout=_DEADLINE_S)
        response.raise_for_status()
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[sample.name, frozenset(sample.labels.items())] = sample.value
        return samples

    def healthy(self) -> bool:
        try:
            return self._http.get(f"{self.http_url}/api/v1/health", timeout=_DEADLINE_S).ok
        except requests.RequestException:
            return False


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.25) -> bool:
    """Poll `predicate()` until truthy or `timeout` seconds pass; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
