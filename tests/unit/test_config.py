from pathlib import Path

import pytest

from services import config
from services.errors import ConfigError


def test_defaults_bind_every_listener_to_loopback() -> None:
    settings = config.load(env={})
    assert (settings.http_host, settings.grpc_host) == ("127.0.0.1", "127.0.0.1")
    assert (settings.http_port, settings.grpc_port) == (8080, 50051)
    assert settings.embedded


def test_environment_overrides_a_single_key_of_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "rm.toml"
    cfg.write_text('[http]\nport = 9000\nhost = "0.0.0.0"\n[log]\nlevel = "debug"\n')
    settings = config.load(str(cfg), env={"RISK_MONITOR_HTTP_PORT": "9100"})
    assert settings.http_port == 9100
    assert settings.http_host == "0.0.0.0"
    assert settings.log_level == "DEBUG"


def test_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "rm.toml"
    cfg.write_text("[grpc]\nport = 6000\n")
    assert config.load(env={"RISK_MONITOR_CONFIG": str(cfg)}).grpc_port == 6000


def test_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "rm.toml"
    cfg.write_text("[http]\nprot = 9000\n")
    with pytest.raises(ConfigError, match=r"unknown key 'http\.prot'"):
        config.load(str(cfg), env={})


def test_unknown_environment_variable_is_rejected() -> None:
    with pytest.raises(ConfigError, match="RISK_MONITOR_HTTP_PROT"):
        config.load(env={"RISK_MONITOR_HTTP_PROT": "1"})


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("RISK_MONITOR_HTTP_PORT", "eighty", "'http.port' has value 'eighty'; expected an integer"),
        ("RISK_MONITOR_GRPC_PORT", "70000", "'grpc.port' has value '70000'; expected a port number"),
        ("RISK_MONITOR_LOG_LEVEL", "LOUD", "'log.level' has value 'LOUD'; expected one of DEBUG"),
        ("RISK_MONITOR_SHUTDOWN_GRACE_S", "-1", "'shutdown.grace_s' has value '-1'; expected a positive"),
    ],
)
def test_bad_value_names_the_key_and_the_value(var: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(env={var: value})
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_type_in_the_file_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "rm.toml"
    cfg.write_text('[database]\npool_size = "many"\n')
    with pytest.raises(ConfigError, match=r"'database\.pool_size' has value 'many'"):
        config.load(str(cfg), env={})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "rm.toml"
    cfg.write_text("[http\nport = 1\n")
    with pytest.raises(ConfigError, match=r"rm\.toml"):
        config.load(str(cfg), env={})


def test_missing_config_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load("/nonexistent/rm.toml", env={})


def test_database_password_is_masked_everywhere_it_is_shown() -> None:
    settings = config.load(env={"RISK_MONITOR_DATABASE_URL": "postgresql://risk:s3cret@db:5432/risk"})
    shown = settings.masked()["database.url"]
    assert "s3cret" not in shown
    assert shown.startswith("postgresql://risk:***@db:5432/risk")


def test_bad_secret_value_is_not_echoed(tmp_path: Path) -> None:
    cfg = tmp_path / "rm.toml"
    cfg.write_text("[database]\nurl = 73519\n")
    with pytest.raises(ConfigError) as info:
        config.load(str(cfg), env={})
    message = str(info.value).replace(str(cfg), "")  # the file's path may hold any digits (pytest-42/)
    assert "73519" not in message
    assert "***" in message


def test_reference_lists_every_setting_with_its_variable() -> None:
    rows = {key: env for key, env, _default, _doc in config.reference()}
    assert rows["database.url"] == "RISK_MONITOR_DATABASE_URL"
    assert rows["http.port"] == "RISK_MONITOR_HTTP_PORT"
    assert set(config.Settings().masked()) == set(rows)


def test_tracing_is_off_by_default_and_reads_its_keys_from_the_environment() -> None:
    assert config.Settings().tracing_otlp_endpoint == ""
    settings = config.load(
        env={
            "RISK_MONITOR_TRACING_OTLP_ENDPOINT": "http://otel:pw@127.0.0.1:4318/v1/traces",
            "RISK_MONITOR_TRACING_SAMPLE_RATIO": "0.25",
        }
    )
    assert (settings.tracing_otlp_endpoint, settings.tracing_sample_ratio) == (
        "http://otel:pw@127.0.0.1:4318/v1/traces",
        0.25,
    )
    assert settings.masked()["tracing.otlp_endpoint"] == "http://otel:***@127.0.0.1:4318/v1/traces"
    assert config.load(env={"RISK_MONITOR_TRACING_SAMPLE_RATIO": "0"}).tracing_sample_ratio == 0.0


@pytest.mark.parametrize("value", ["1.5", "-0.1", "often"])
def test_sample_ratio_outside_zero_to_one_is_rejected(value: str) -> None:
    with pytest.raises(ConfigError, match=r"tracing\.sample_ratio.*from 0 to 1"):
        config.load(env={"RISK_MONITOR_TRACING_SAMPLE_RATIO": value})
