"""The producer's config file: TOML + MARKETBUS__* overrides, validated, with errors
naming the bad key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from marketbus.producer.config import ProducerConfig, load_producer_config
from marketbus.shared.config import build_config
from marketbus.shared.errors import ConfigError

MINIMAL = {"exchanges": [{"id": "binance", "symbols": ["BTC/USDT"]}]}


def test_defaults() -> None:
    config = build_config(ProducerConfig, MINIMAL, environ={})
    assert config.redis.url == "redis://127.0.0.1:6379/0"
    assert config.redis.namespace == "md"
    assert config.exchanges[0].kinds == ["ohlcv.1m", "ticker"]
    assert config.streams.for_kind("ohlcv.1h") == config.streams.ohlcv
    assert config.streams.for_kind("trades") == config.streams.trades


def test_env_overrides_nested_keys_and_list_items() -> None:
    config = build_config(
        ProducerConfig,
        MINIMAL,
        environ={
            "MARKETBUS__REDIS__URL": "redis://h:7000/2",
            "MARKETBUS__STREAMS__TRADES": "5",
            "MARKETBUS__EXCHANGES__0__SYMBOLS": '["ETH/USDT", "SOL/USDT"]',
            "UNRELATED": "x",
        },
    )
    assert config.redis.url == "redis://h:7000/2"
    assert config.streams.trades == 5
    assert config.exchanges[0].symbols == ["ETH/USDT", "SOL/USDT"]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"exchanges": [{"id": "binance", "symbols": []}]}, "exchanges[0].symbols"),
        ({"exchanges": [{"id": "binance", "symbols": ["A/B"], "kinds": ["x"]}]}, "exchanges[0]"),
        ({**MINIMAL, "streams": {"ohlcv": 0}}, "streams.ohlcv"),
        ({**MINIMAL, "redis": {"encoding": "xml"}}, "redis.encoding"),
        ({**MINIMAL, "redis": {"urll": "x"}}, "redis"),
        ({"exchanges": []}, "exchanges"),
    ],
)
def test_errors_name_the_bad_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        build_config(ProducerConfig, data, environ={})


def test_env_override_of_missing_list_item_is_clear() -> None:
    with pytest.raises(ConfigError, match="MARKETBUS__EXCHANGES__3__ID"):
        build_config(ProducerConfig, MINIMAL, environ={"MARKETBUS__EXCHANGES__3__ID": "okx"})


def test_load_config_file(tmp_path: Path) -> None:
    path = tmp_path / "producer.toml"
    path.write_text(
        '[redis]\nurl = "redis://127.0.0.1:6390/0"\n\n'
        '[[exchanges]]\nid = "binance"\nsymbols = ["BTC/USDT"]\nkinds = ["ohlcv.1m"]\n'
        '[exchanges.ccxt.urls.api.ws]\nspot = "ws://127.0.0.1:1/stream/ws"\n'
    )
    config = load_producer_config(path, environ={})
    assert config.exchanges[0].ccxt == {
        "urls": {"api": {"ws": {"spot": "ws://127.0.0.1:1/stream/ws"}}}
    }
    assert config.exchange("binance").kinds == ["ohlcv.1m"]
    with pytest.raises(ConfigError, match="okx"):
        config.exchange("okx")


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_producer_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[redis\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_producer_config(bad)


def test_a_bad_key_in_the_file_is_named_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "producer.toml"
    path.write_text('[[exchanges]]\nid = "binance"\nsymbols = []\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: exchanges[0].symbols")):
        load_producer_config(path, environ={})


def test_a_repeated_exchange_id_is_rejected_naming_both_positions() -> None:
    """Two entries for one exchange share one lease: the second would wait as a standby
    for the first, forever and silently. Other ``ccxt`` options do not make it another
    exchange."""
    okx = {"id": "okx", "symbols": ["BTC/USDT"]}
    again = {"id": "binance", "symbols": ["ETH/USDT"], "ccxt": {"options": {"x": 1}}}
    data = {"exchanges": [*MINIMAL["exchanges"], okx, again]}
    with pytest.raises(ConfigError) as info:
        build_config(ProducerConfig, data, environ={})
    assert str(info.value) == "config: exchanges[2].id 'binance' repeats exchanges[0]"


def test_a_repeated_exchange_id_from_the_environment_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "producer.toml"
    path.write_text(
        '[[exchanges]]\nid = "binance"\nsymbols = ["BTC/USDT"]\n\n'
        '[[exchanges]]\nid = "okx"\nsymbols = ["BTC/USDT"]\n'
    )
    environ = {"MARKETBUS__EXCHANGES__1__ID": "binance"}
    with pytest.raises(ConfigError, match=re.escape(f"{path}: exchanges[1].id 'binance'")):
        load_producer_config(path, environ=environ)


def test_distinct_exchange_ids_are_accepted() -> None:
    okx = {"id": "okx", "symbols": ["BTC/USDT"]}
    config = build_config(ProducerConfig, {"exchanges": [*MINIMAL["exchanges"], okx]}, environ={})
    assert [ex.id for ex in config.exchanges] == ["binance", "okx"]
