"""``risk-monitor alerts|compliance|risk``: a gRPC client of the running monitor, for people.

Tables by default, ``--json`` for scripts. ``--target`` (or RISK_MONITOR_API_TARGET) names the server,
``--token`` (or RISK_MONITOR_API_TOKEN) the bearer token; ``--ca``/``--cert``/``--key`` turn on TLS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from riskmonitor.v1 import risk_monitor_pb2 as pb
from riskmonitor.v1 import risk_monitor_pb2_grpc as pb_grpc

EXIT_ERROR = 2
_SEVERITY = {"warning": pb.SEVERITY_WARNING, "critical": pb.SEVERITY_CRITICAL}
_STATE = {"open": pb.ALERT_STATE_OPEN, "acknowledged": pb.ALERT_STATE_ACKNOWLEDGED, "resolved": pb.ALERT_STATE_RESOLVED}


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if args.ca:
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(args.ca).read_bytes(),
            private_key=Path(args.key).read_bytes() if args.key else None,
            certificate_chain=Path(args.cert).read_bytes() if args.cert else None,
        )
        return grpc.secure_channel(args.target, creds)
    return grpc.insecure_channel(args.target)


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {args.token}")] if args.token else []


def _when(ts: Timestamp) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if ts.seconds or ts.nanos else ""


def _name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    for row in (headers, *rows):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _json(messages: Iterable[Message]) -> None:
    for message in messages:
        print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), sort_keys=True))


def _alert_row(a: pb.Alert) -> list[str]:
    return [
        str(a.id),
        _when(a.opened_at),
        _name(pb.Severity, a.severity, "SEVERITY_"),
        _name(pb.AlertState, a.state, "ALERT_STATE_"),
        a.account,
        a.limit_name,
        a.observed_value,
        a.threshold,
    ]


def _parse_time(text: str, ts: Timestamp) -> None:
    ts.FromDatetime(datetime.fromisoformat(text))


def cmd_alerts_list(args: argparse.Namespace, stub: pb_grpc.RiskMonitorServiceStub, md: Any) -> int:
    request = pb.ListAlertsRequest(
        account=args.account or "",
        limit_type=args.limit_type or "",
        severity=_SEVERITY.get(args.severity or "", pb.SEVERITY_UNSPECIFIED),
        state=_STATE.get(args.state or "", pb.ALERT_STATE_UNSPECIFIED),
        symbol=args.symbol or "",
        newest_first=args.newest_first,
        page_size=args.page_size,
    )
    if args.since:
        _parse_time(args.since, request.opened_after)
    if args.until:
        _parse_time(args.until, request.opened_before)
    alerts: list[pb.Alert] = []
    while True:
        response = stub.ListAlerts(request, metadata=md, timeout=args.timeout)
        alerts += response.alerts
        if not args.all or not response.next_page_token:
            break
        request.page_token = response.next_page_token
    if args.json:
        _json(alerts)
    else:
        headers = ["ID", "OPENED", "SEVERITY", "STATE", "ACCOUNT", "LIMIT", "VALUE", "THRESHOLD"]
        _table([_alert_row(a) for a in alerts], headers)
        if response.next_page_token and not args.all:
            print(f"(more: --all, or continue after {response.next_page_token})", file=sys.stderr)
    return 0


def cmd_alerts_show(args: argparse.Namespace, stub: pb_grpc.RiskMonitorServiceStub, md: Any) -> int:
    response = stub.GetAlert(pb.GetAlertRequest(alert_id=args.id), metadata=md, timeout=args.timeout)
    if args.json:
        _json([response])
        return 0
    a = response.alert
    for key, value in [
        ("alert", str(a.id)),
        ("fingerprint", a.fingerprint),
        ("limit", f"{a.limit_name} ({a.limit_type}, v{a.limit_version})"),
        ("account", a.account),
        ("severity", _name(pb.Severity, a.severity, "SEVERITY_")),
        ("state", _name(pb.AlertState, a.state, "ALERT_STATE_")),
        ("value", f"{a.observed_value} (threshold {a.threshold})"),
        ("opened", _when(a.opened_at)),
        ("acknowledged", f"{_when(a.acknowledged_at)} {a.acknowledged_by} {a.ack_comment}".strip()),
        ("resolved", _when(a.resolved_at)),
    ]:
        print(f"{key:<13} {value}")
    print()
    _table(
        [
            [str(e.id), _when(e.occurred_at), e.event_type, e.actor, e.observed_value, e.hash[:16]]
            for e in response.events
        ],
        ["EVENT", "AT", "TYPE", "ACTOR", "VALUE", "HASH"],
    )
    return 0


def cmd_alerts_ack(args: argparse.Namespace, stub: pb_grpc.RiskMonitorServiceStub, md: Any) -> int:
    request = pb.AcknowledgeAlertRequest(alert_id=args.id, actor=args.actor, comment=args.comment)
    response = stub.AcknowledgeAlert(request, metadata=md, timeout=args.timeout)
    if args.json:
        _json([response])
    else:
        print(f"alert {response.alert.id} {'acknowledged' if response.changed else 'was already acknowledged'}")
    return 0


def cmd_alerts_watch(args: argparse.Namespace, stub: pb_grpc.RiskMonitorServiceStub, md: Any) -> int:
    request = pb.WatchAlertsRequest(resume_after_event_id=args.resume_after, accounts=args.account or [])
    for message in stub.WatchAlerts(request, metadata=md):
        e = message.event
        if args.json:
            _json([message])
        else:
            print(f"{e.id}  {_when(e.occurred_at)}  {e.event_type:<12} alert {e.alert_id}  {e.account}  {e.limit_name}")
        sys.stdout.flush()
    return 0


def cmd_compliance(args: argparse.Namespace, stub: pb_grpc.RiskMonitorServiceStub, md: Any) -> int:
    request = pb.GetComplianceStatusRequest(account=args.account or "")
    response = stub.GetComplianceStatus(request, metadata=md, timeout=args.timeout)
    if args.json:
        _json(response.statuses)
    else:
        rows = [
            [s.account, _name(pb.ComplianceState, s.state, "COMPLIANCE_STATE_"), _when(s.changed_at)]
            for s in response.statuses
        ]
        _table(rows, ["ACCOUNT", "STATUS", "SINCE"])
    return 0


def cmd_risk(args: argparse.Namespace, stub: pb_grpc.RiskMonitorServiceStub, md: Any) -> int:
    s = stub.GetRiskSummary(pb.GetRiskSummaryRequest(account=args.account), metadata=md, timeout=args.timeout)
    if args.json:
        _json([s])
        return 0
    print(f"{s.account}  as of {_when(s.as_of)}")
    print(f"equity {s.equity_usd}  gross {s.gross_exposure_usd}  net {s.net_exposure_usd}  leverage {s.leverage}")
    print(f"daily P&L {s.daily_pnl_usd}  drawdown {s.drawdown}  unrealized {s.unrealized_pnl_usd}\n")
    _table(
        [[p.symbol, p.kind, p.quantity, p.avg_price, p.mark_price, p.notional_usd] for p in s.positions],
        ["SYMBOL", "KIND", "QTY", "AVG", "MARK", "NOTIONAL USD"],
    )
    print()
    _table(
        [
            [u.limit_name, u.subject, u.value, u.critical or u.warn, u.utilisation, _name(pb.Level, u.level, "LEVEL_")]
            for u in s.limits
        ],
        ["LIMIT", "SUBJECT", "VALUE", "THRESHOLD", "UTILISATION", "LEVEL"],
    )
    return 0


Command = Callable[[argparse.Namespace, pb_grpc.RiskMonitorServiceStub, Any], int]


def _runner(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with _channel(args) as channel:
            try:
                return command(args, pb_grpc.RiskMonitorServiceStub(channel), _metadata(args))
            except grpc.RpcError as err:
                print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
                return EXIT_ERROR

    return run


def add_commands(sub: Any) -> None:
    """Register the client commands on the ``risk-monitor`` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--target", default=os.environ.get("RISK_MONITOR_API_TARGET", "127.0.0.1:50051"))
    common.add_argument("--token", default=os.environ.get("RISK_MONITOR_API_TOKEN", ""), help="bearer token")
    common.add_argument("--ca", help="PEM CA of the server certificate (turns on TLS)")
    common.add_argument("--cert", help="PEM client certificate (mutual TLS)")
    common.add_argument("--key", help="PEM client key (mutual TLS)")
    common.add_argument("--timeout", type=float, default=10.0, help="deadline per call, seconds")
    common.add_argument("--json", action="store_true", help="one JSON object per line")

    alerts = sub.add_parser("alerts", help="list, show, acknowledge and watch alerts (gRPC client)")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ALERTS_COMMAND")
    ls = alerts_sub.add_parser("list", parents=[common], help="alerts, oldest first")
    ls.add_argument("--account")
    ls.add_argument("--limit-type")
    ls.add_argument("--severity", choices=sorted(_SEVERITY))
    ls.add_argument("--state", choices=sorted(_STATE))
    ls.add_argument("--symbol")
    ls.add_argument("--since", help="ISO time, inclusive (opened at)")
    ls.add_argument("--until", help="ISO time, exclusive")
    ls.add_argument("--newest-first", action="store_true")
    ls.add_argument("--page-size", type=int, default=50)
    ls.add_argument("--all", action="store_true", help="follow every page")
    ls.set_defaults(func=_runner(cmd_alerts_list))
    show = alerts_sub.add_parser("show", parents=[common], help="one alert and its audit history")
    show.add_argument("id", type=int)
    show.set_defaults(func=_runner(cmd_alerts_show))
    ack = alerts_sub.add_parser("ack", parents=[common], help="acknowledge an alert (operator role)")
    ack.add_argument("id", type=int)
    ack.add_argument("--comment", required=True)
    ack.add_argument("--actor", default=os.environ.get("USER", ""))
    ack.set_defaults(func=_runner(cmd_alerts_ack))
    watch = alerts_sub.add_parser("watch", parents=[common], help="follow alert events until interrupted")
    watch.add_argument("--resume-after", type=int, default=0, metavar="EVENT_ID")
    watch.add_argument("--account", action="append")
    watch.set_defaults(func=_runner(cmd_alerts_watch))

    compliance = sub.add_parser("compliance", parents=[common], help="compliance status per account (gRPC client)")
    compliance.add_argument("account", nargs="?")
    compliance.set_defaults(func=_runner(cmd_compliance))
    risk = sub.add_parser("risk", parents=[common], help="risk summary of one account (gRPC client)")
    risk.add_argument("account")
    risk.set_defaults(func=_runner(cmd_risk))
