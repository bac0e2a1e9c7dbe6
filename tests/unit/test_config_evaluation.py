"""Configuration keys of the evaluation: limits file, intervals, notification channels."""

from __future__ import annotations

from pathlib import Path

from services import config


def test_evaluation_defaults() -> None:
    settings = config.load(env={})
    assert (settings.limits_file, settings.limits_reload_interval_s) == ("", 2.0)
    assert (settings.evaluation_interval_s, settings.evaluation_history_every_s) == (1.0, 60.0)
    assert settings.notifications_channels == ()


def test_channels_are_comma_separated_and_trimmed(tmp_path: Path) -> None:
    cfg = tmp_path / "rm.toml"
    cfg.write_text('[limits]\nfile = "~/limits.toml"\n[notifications]\nchannels = "webhook, audit ,"\n')
    settings = config.load(str(cfg), env={})
    assert settings.notifications_channels == ("webhook", "audit")
    assert settings.limits_file == str(Path("~/limits.toml").expanduser())
