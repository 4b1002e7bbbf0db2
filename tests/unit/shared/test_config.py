"""Config loading for any Struct: TOML + MARKETBUS__* overrides, validated, with errors
naming the bad key. (The producer's own file: tests/unit/producer/test_config.py.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import msgspec
import pytest
from msgspec import Meta

from marketbus.shared.config import (
    RedisConfig,
    build_config,
    env_overrides,
    load_config,
    redis_url_from,
)
from marketbus.shared.errors import ConfigError


class Strategy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A consumer's own settings, shaped like deploy/strategy_example.py's."""

    redis: RedisConfig = RedisConfig()
    feeds: Annotated[list[str], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["md:binance:ticker:BTC/USDT"]
    )
    window: Annotated[int, Meta(gt=0)] = 100


def test_defaults_need_no_data() -> None:
    config = build_config(Strategy, {}, environ={})
    assert config.redis == RedisConfig()
    assert config.redis.namespace == "md" and config.redis.encoding == "json"


def test_env_overrides_nested_keys_and_list_items() -> None:
    config = build_config(
        Strategy,
        {"feeds": ["a", "b"]},
        environ={
            "MARKETBUS__REDIS__URL": "redis://h:7000/2",
            "MARKETBUS__WINDOW": "5",
            "MARKETBUS__FEEDS__1": "c",
            "UNRELATED": "x",
        },
    )
    assert config.redis.url == "redis://h:7000/2"
    assert config.window == 5
    assert config.feeds == ["a", "c"]


def test_env_values_are_json_when_they_parse_else_strings() -> None:
    found = env_overrides({"MARKETBUS__A__B": "[1, 2]", "MARKETBUS__C": "plain text"})
    assert found == [(["a", "b"], [1, 2]), (["c"], "plain text")]
    with pytest.raises(ConfigError, match="MARKETBUS__A____B: empty path part"):
        env_overrides({"MARKETBUS__A____B": "1"})


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"feeds": []}, "feeds"),
        ({"window": 0}, "window"),
        ({"redis": {"encoding": "xml"}}, "redis.encoding"),
        ({"redis": {"connect_timeout_s": 0}}, "redis.connect_timeout_s"),
        ({"redis": {"urll": "x"}}, "redis"),
    ],
)
def test_errors_name_the_bad_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        build_config(Strategy, data, environ={})


def test_env_override_of_missing_list_item_is_clear() -> None:
    with pytest.raises(ConfigError, match="MARKETBUS__FEEDS__3"):
        build_config(Strategy, {"feeds": ["a"]}, environ={"MARKETBUS__FEEDS__3": "x"})


def test_load_config_reads_the_file_into_the_given_struct(tmp_path: Path) -> None:
    path = tmp_path / "strategy.toml"
    path.write_text('window = 7\n\n[redis]\nurl = "redis://127.0.0.1:6390/0"\n')
    config = load_config(path, Strategy, environ={"MARKETBUS__REDIS__NAMESPACE": "alt"})
    assert config == Strategy(
        redis=RedisConfig(url="redis://127.0.0.1:6390/0", namespace="alt"), window=7
    )


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", Strategy)
    bad = tmp_path / "bad.toml"
    bad.write_text("[redis\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, Strategy)


def test_redis_config_repr_redacts_the_password() -> None:
    config = RedisConfig(url="redis://alice:s3cret@h:6379/1")
    assert "s3cret" not in repr(config)
    assert "url='redis://alice:***@h:6379/1'" in repr(config)


def test_a_redis_url_with_a_non_numeric_database_is_rejected_at_load() -> None:
    """redis-py reads ``/abc`` as db 0, silently: the bus would land in the wrong db."""
    data = {"redis": {"url": "redis://alice:s3cret@h:6379/abc"}}
    with pytest.raises(ConfigError) as info:
        build_config(Strategy, data, environ={})
    assert str(info.value) == (
        "config: redis.url 'redis://alice:***@h:6379/abc': the database must be a number, not 'abc'"
    )
    with pytest.raises(ConfigError, match="the port must be a number"):
        RedisConfig(url="redis://h:port/0")


# --- redis_url_from: --redis, then MARKETBUS_REDIS_URL, then MARKETBUS_REDIS_URL_FILE ----


def test_redis_url_comes_from_the_flag_then_the_variable_then_the_file(tmp_path: Path) -> None:
    """Credentials on the command line show in ``ps``; the variables keep them out."""
    file = tmp_path / "redis-url"
    file.write_text("redis://ops:from-file@h:6379/0\nignored second line\n")
    environ = {"MARKETBUS_REDIS_URL": "redis://ops:from-env@h:6379/0"}
    with_file = {"MARKETBUS_REDIS_URL_FILE": str(file)}
    assert redis_url_from("redis://ops:flag@h/0", environ | with_file) == "redis://ops:flag@h/0"
    assert redis_url_from(None, environ | with_file) == "redis://ops:from-env@h:6379/0"
    assert redis_url_from(None, with_file) == "redis://ops:from-file@h:6379/0"
    assert redis_url_from(None, {}) == RedisConfig().url


def test_an_empty_variable_counts_as_unset_and_the_file_line_is_trimmed(tmp_path: Path) -> None:
    file = tmp_path / "redis-url"
    file.write_text("  rediss://ops:pw@h:6380/0\r\n")
    environ = {"MARKETBUS_REDIS_URL": "", "MARKETBUS_REDIS_URL_FILE": str(file)}
    assert redis_url_from(None, environ) == "rediss://ops:pw@h:6380/0"
    assert redis_url_from(None, {"MARKETBUS_REDIS_URL": "", "MARKETBUS_REDIS_URL_FILE": ""}) == (
        RedisConfig().url
    )


def test_an_unreadable_url_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        redis_url_from(None, {"MARKETBUS_REDIS_URL_FILE": str(missing)})
    assert str(info.value) == (
        f"MARKETBUS_REDIS_URL_FILE names {str(missing)!r}, which cannot be read: "
        "No such file or directory"
    )
    with pytest.raises(ConfigError, match=r"cannot be read: Is a directory$"):
        redis_url_from(None, {"MARKETBUS_REDIS_URL_FILE": str(tmp_path)})
    long = tmp_path / "long"
    long.write_text("redis://h/0" + "x" * 5000)
    with pytest.raises(ConfigError, match=r"first line is longer than 4096 characters$"):
        redis_url_from(None, {"MARKETBUS_REDIS_URL_FILE": str(long)})
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"cannot be read: not UTF-8 text"):
        redis_url_from(None, {"MARKETBUS_REDIS_URL_FILE": str(binary)})


def test_an_empty_url_file_is_an_error_not_the_default_server(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError) as info:
        redis_url_from(None, {"MARKETBUS_REDIS_URL_FILE": str(empty)})
    assert str(info.value) == (
        f"MARKETBUS_REDIS_URL_FILE names {str(empty)!r}, whose first line is empty"
    )


@pytest.mark.parametrize(
    ("cli_value", "environ", "where"),
    [
        ("redis://u:s3cret@h/abc", {}, "--redis"),
        (None, {"MARKETBUS_REDIS_URL": "redis://u:s3cret@h/abc"}, "MARKETBUS_REDIS_URL"),
    ],
)
def test_a_malformed_url_names_where_it_came_from_without_the_password(
    cli_value: str | None, environ: dict[str, str], where: str
) -> None:
    with pytest.raises(ConfigError) as info:
        redis_url_from(cli_value, environ)
    assert str(info.value).startswith(f"{where} 'redis://u:***@h/abc': the database must be")


def test_a_malformed_url_in_the_file_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "redis-url"
    file.write_text("redis://u:s3cret@h:port/0\n")
    with pytest.raises(ConfigError) as info:
        redis_url_from(None, {"MARKETBUS_REDIS_URL_FILE": str(file)})
    assert str(info.value).startswith(f"{file} (MARKETBUS_REDIS_URL_FILE) ")
    assert "s3cret" not in str(info.value)
