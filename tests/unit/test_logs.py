import json
import logging

from services.logs import JsonFormatter, TextFormatter, log_context


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "jobs.collect", "levelname": "INFO", "levelno": 20, "msg": msg})
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_line_carries_service_and_context_fields() -> None:
    formatter = JsonFormatter("risk-monitor", "replica-1")
    with log_context(job="collect_positions", venue="ex-a"), log_context(run_id=42):
        line = formatter.format(_record("collected %s records", run_id=42))
    entry = json.loads(line)
    assert entry["service"] == "risk-monitor"
    assert entry["instance"] == "replica-1"
    assert entry["job"] == "collect_positions"
    assert entry["venue"] == "ex-a"
    assert entry["run_id"] == 42
    assert entry["level"] == "INFO"
    assert entry["logger"] == "jobs.collect"
    assert entry["time"].endswith("+00:00")


def test_context_ends_with_its_block() -> None:
    formatter = JsonFormatter("risk-monitor", "i")
    with log_context(account="a-1"):
        pass
    assert "account" not in json.loads(formatter.format(_record("x")))


def test_exceptions_stay_on_one_json_line() -> None:
    formatter = JsonFormatter("risk-monitor", "i")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = _record("failed")
        record.exc_info = sys.exc_info()
    line = formatter.format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_text_format_shows_context_for_people() -> None:
    with log_context(venue="ex-a"):
        line = TextFormatter().format(_record("slow"))
    assert line.endswith("[venue=ex-a]")
