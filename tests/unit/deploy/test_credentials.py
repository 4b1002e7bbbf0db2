"""Credentials stay out of what marketbus prints: `redact` on every URL form an
operator may write, `RedisConfig`'s repr, and the cluster config checks."""

from __future__ import annotations

import pytest

from marketbus.producer.config import ProducerConfig
from marketbus.shared.cluster import cluster_client, is_cluster, slot_of
from marketbus.shared.config import RedisConfig, build_config
from marketbus.shared.errors import ConfigError
from marketbus.shared.urls import redact

SECRET = "s3cret-Pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"redis://marketbus-producer:{SECRET}@redis:6379/0",
            "redis://marketbus-producer:***@redis:6379/0",
        ),
        (f"rediss://u:{SECRET}@[::1]:6380/0", "rediss://u:***@[::1]:6380/0"),
        (f"redis://u:{SECRET}@h:99999/0", "redis://<unparseable>"),
        (f"redis://h/0?password={SECRET}&db=0", "redis://h/0?password=***&db=0"),
        (f"unix:///run/redis.sock?password={SECRET}", "unix:///run/redis.sock?password=***"),
        (f"redis://u:p@ss{SECRET}@h/0", "redis://u:***@h/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redact_hides_passwords_in_every_url_form(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_config_reprs_redact_the_url() -> None:
    config = build_config(
        ProducerConfig,
        {"exchanges": [{"id": "binance", "symbols": ["BTC/USDT"]}]},
        environ={"MARKETBUS__REDIS__URL": f"redis://marketbus-producer:{SECRET}@redis:6379/0"},
    )
    for text in (repr(config), str(config), repr(config.redis), f"{config.redis}"):
        assert SECRET not in text
        assert "marketbus-producer:***@redis:6379/0" in text
    assert config.redis.url.endswith(f"{SECRET}@redis:6379/0")  # the value itself is intact


def test_cluster_key_defaults_off_and_is_read_from_config() -> None:
    assert not is_cluster(RedisConfig())
    config = build_config(
        ProducerConfig,
        {"exchanges": [{"id": "okx", "symbols": ["BTC/USDT"]}], "redis": {"cluster": True}},
        environ={},
    )
    assert is_cluster(config.redis)


def test_cluster_client_keeps_acl_user_and_tls_files() -> None:
    config = RedisConfig(
        url=f"rediss://marketbus-consumer:{SECRET}@node-1:6380/0",
        cluster=True,
        tls_ca_file="ca.crt",
    )
    cluster = cluster_client(config)
    [seed] = cluster.nodes_manager.startup_nodes.values()
    kwargs = seed.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("marketbus-consumer", SECRET)
    assert kwargs["ssl_ca_certs"] == "ca.crt"


@pytest.mark.parametrize("url", ["redis://h:6379/2", "unix:///run/redis.sock"])
def test_cluster_client_refuses_urls_a_cluster_cannot_serve(url: str) -> None:
    with pytest.raises(ConfigError):
        cluster_client(RedisConfig(url=url, cluster=True))


def test_slots_are_redis_crc16_of_the_whole_name() -> None:
    """No hashtag in feed names: the whole name is hashed (as CLUSTER KEYSLOT does)."""
    assert slot_of("md:binance:ticker:BTC/USDT") == 13237
    assert slot_of("md:binance:ticker:BTC/USDT") != slot_of("md:binance:ticker:ETH/USDT")
