"""The [[venues]] tables and the collection.* keys of the configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest

from services import config
from services.cli import main
from services.errors import ConfigError

VENUES = """
[collection]
positions_interval_s = 0.5
workers = 3

[[venues]]
id = "exchange-a"
kind = "exchange"
url = "http://127.0.0.1:9001/"
api_key_env = "EXA_KEY"
read_timeout_s = 1.5
concurrency = 4
batch = 100

[[venues]]
id = "custodian-a"
kind = "custodian"
url = "https://custody.example"

[[venues]]
id = "market-data"
kind = "market_data"
target = "127.0.0.1:9003"
symbols = ["BTC-USDT", "ETH-USDT"]
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rm.toml"
    path.write_text(text)
    return str(path)


def test_venues_and_collection_keys_are_read(tmp_path: Path) -> None:
    settings = config.load(_write(tmp_path, VENUES), env={"EXA_KEY": "k-123", "RISK_MONITOR_COLLECTION_WORKERS": "4"})
    exchange, custodian, market = settings.venues
    assert (exchange.id, exchange.kind, exchange.url, exchange.api_key) == (
        "exchange-a",
        "exchange",
        "http://127.0.0.1:9001",
        "k-123",
    )
    assert exchange.read_timeout_s == 1.5
    assert exchange.connect_timeout_s is None
    assert (exchange.concurrency, custodian.concurrency) == (4, None)  # None: collection.concurrency
    assert (exchange.batch, custodian.batch) == (100, None)  # None: one request per account
    assert settings.collection_concurrency == 16
    assert custodian.url == "https://custody.example"
    assert (market.target, market.symbols) == ("127.0.0.1:9003", ("BTC-USDT", "ETH-USDT"))
    assert settings.collection_positions_interval_s == 0.5
    assert settings.collection_workers == 4  # the environment wins over the file
    assert settings.collection_prices_interval_s == 1.0  # default


def test_the_api_key_never_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, VENUES)
    settings = config.load(path, env={"EXA_KEY": "k-123"})
    assert "k-123" not in repr(settings)
    shown = settings.masked()["venues.exchange-a"]
    assert "k-123" not in shown
    assert "api_key=*** from $EXA_KEY" in shown
    monkeypatch.setenv("EXA_KEY", "k-123")
    assert main(["--config", path, "config", "show"]) == 0
    out = capsys.readouterr().out
    assert "k-123" not in out
    assert "venues.market-data" in out


@pytest.mark.parametrize(
    ("venue", "message"),
    [
        ('id = "x"\nkind = "bank"\nurl = "http://h"', "venues[0]: 'kind' has value 'bank'; expected one of exchange"),
        ('id = "x"\nkind = "exchange"', "venue 'x': a exchange venue needs 'url'"),
        ('id = "x"\nkind = "market_data"\nurl = "http://h"', "venue 'x': a market_data venue needs 'target'"),
        (
            'id = "x"\nkind = "exchange"\nurl = "ftp://h"',
            "'url' has value 'ftp://h'; expected an http:// or https:// URL",
        ),
        ('id = "x"\nkind = "exchange"\nurl = "http://h"\nprot = 1', "venues[0]: unknown key 'prot'"),
        ('kind = "exchange"\nurl = "http://h"', "venues[0]: missing key 'id'"),
        ('id = "x"\nkind = "exchange"\nurl = "http://h"\nsymbols = ["A"]', "'symbols' applies to market_data"),
        (
            'id = "x"\nkind = "exchange"\nurl = "http://h"\napi_key_env = "NOPE"',
            "variable NOPE (api_key_env) is not set",
        ),
        ('id = "x"\nkind = "exchange"\nurl = "http://h"\nread_timeout_s = 0', "'read_timeout_s' has value 0; expected"),
        ('id = "x"\nkind = "exchange"\nurl = "http://h"\nconcurrency = 0', "'concurrency' has value 0; expected"),
        ('id = "x"\nkind = "exchange"\nurl = "http://h"\nbatch = 1025', "'batch' has value 1025; expected"),
        ('id = "x"\nkind = "market_data"\ntarget = "h:1"\nbatch = 10', "'batch' applies to exchange and custodian"),
    ],
)
def test_a_bad_venue_is_named_in_one_line(tmp_path: Path, venue: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(_write(tmp_path, f"[[venues]]\n{venue}\n"), env={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_duplicate_venue_id_is_rejected(tmp_path: Path) -> None:
    one = '[[venues]]\nid = "x"\nkind = "exchange"\nurl = "http://h"\n'
    with pytest.raises(ConfigError, match="venue 'x': duplicate venue id"):
        config.load(_write(tmp_path, one + one), env={})


def test_a_key_pasted_in_place_of_its_variable_name_is_not_echoed(tmp_path: Path) -> None:
    text = '[[venues]]\nid = "x"\nkind = "exchange"\nurl = "http://h"\napi_key_env = "sk-live-9f8e7d"\n'
    with pytest.raises(ConfigError) as info:
        config.load(_write(tmp_path, text), env={})
    assert "sk-live-9f8e7d" not in str(info.value)
    assert "'api_key_env' has value (not shown)" in str(info.value)


@pytest.mark.parametrize(
    "var",
    [
        "RISK_MONITOR_COLLECTION_WORKERS",
        "RISK_MONITOR_COLLECTION_PRICE_REFRESH_INTERVALS",
        "RISK_MONITOR_COLLECTION_CONCURRENCY",
    ],
)
def test_counts_must_be_positive(var: str) -> None:
    with pytest.raises(ConfigError, match="expected a positive integer"):
        config.load(env={var: "0"})


def test_account_shards_may_be_zero_but_not_negative() -> None:
    assert config.load(env={"RISK_MONITOR_LEASES_ACCOUNT_SHARDS": "0"}).leases_account_shards == 0
    assert config.load(env={}).leases_account_shards == 16
    with pytest.raises(ConfigError, match=r"'leases\.account_shards' has value '-1'; expected an integer from 0"):
        config.load(env={"RISK_MONITOR_LEASES_ACCOUNT_SHARDS": "-1"})


def test_the_readme_venues_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("### Pointing the monitor at venues", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    settings = config.load(_write(tmp_path, example), env={"EXCHANGE_A_API_KEY": "k"})
    assert [(v.id, v.kind) for v in settings.venues] == [
        ("exchange-a", "exchange"),
        ("custodian-a", "custodian"),
        ("market-data", "market_data"),
    ]
