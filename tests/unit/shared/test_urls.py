"""`redact`: the only form of a Redis URL marketbus prints; `check_url`: what marketbus
accepts as one. (Every URL form an operator may write: tests/unit/deploy/test_credentials.py.)"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.shared.errors import ConfigError
from marketbus.shared.urls import check_url, redact


def test_redact_hides_only_the_password() -> None:
    assert redact("redis://alice:s3cret@h:6379/1") == "redis://alice:***@h:6379/1"
    assert redact("rediss://:s3cret@h/0") == "rediss://:***@h/0"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


def test_redact_masks_a_password_query_parameter_and_unparseable_urls() -> None:
    assert redact("redis://h/0?password=s3cret&db=1") == "redis://h/0?password=***&db=1"
    assert redact("redis://u:s3cret@h:notaport/0") == "redis://<unparseable>"


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://h",
        "redis://h/",
        "redis://alice:s3cret@h:6379/15",
        "rediss://h:6380/1",
        "redis://[::1]:6379/0",
        "redis://h/0?db=3",
        "unix:///run/redis.sock",
        "unix:///run/redis.sock?db=2",
        "redis://h/0?socket_timeout=1.5&health_check_interval=10&client_name=x",
    ],
)
def test_well_formed_urls_pass(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (
            "redis://u:s3cret@h:6379/abc",
            "'redis://u:***@h:6379/abc': the database must be a number, not 'abc'",
        ),
        ("redis://u:s3cret@h/-1", "the database must be a number, not '-1'"),
        ("redis://u:s3cret@h/0/1", "the database must be a number, not '0/1'"),
        ("redis://u:s3cret@h/0?db=x", "the database must be a number, not 'x'"),
        ("unix:///run/redis.sock?db=one", "the database must be a number, not 'one'"),
        (
            "redis://u:s3cret@h:notaport/0",
            "the port must be a number from 1 to 65535, not 'notaport'",
        ),
        ("redis://u:s3cret@h:99999/0", "the port must be a number from 1 to 65535, not '99999'"),
        ("redis://u:s3cret@h:0/0", "the port must be a number from 1 to 65535, not '0'"),
        ("redis://u:s3cret@[::1/0", "not a URL"),
        ("http://u:s3cret@h/0", "scheme must be one of redis, rediss, unix"),
        ("127.0.0.1:6379", "scheme must be one of redis, rediss, unix"),
        ("unix://", "the socket path is missing"),
        ("redis://u:s3cret@h/0?socket_timeout=abc", "query parameter socket_timeout 'abc' is not"),
        ("redis://u:s3cret@h/0 ", "a space or control character"),
        ("redis://u:s3cret@h/\n1", "a space or control character"),
    ],
)
def test_malformed_urls_are_config_errors_naming_the_part(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_url(url)
    message = str(info.value)
    assert message.startswith("redis.url ")
    assert says in message
    assert "s3cret" not in message and "\n" not in message


def test_the_error_names_where_the_url_came_from() -> None:
    with pytest.raises(ConfigError, match=r"^MARKETBUS_REDIS_URL 'redis://h/x': "):
        check_url("redis://h/x", where="MARKETBUS_REDIS_URL")


@given(db=st.integers(min_value=0, max_value=10**6), port=st.integers(1, 65535))
def test_any_numeric_db_and_port_pass(db: int, port: int) -> None:
    check_url(f"redis://h:{port}/{db}")


@given(
    db=st.text(st.characters(blacklist_characters="?#"), min_size=1).filter(
        lambda s: not (s.isascii() and s.isdigit())
    )
)
def test_any_other_db_is_rejected_without_the_password(db: str) -> None:
    url = f"redis://u:s3cret@h/{db}"
    with pytest.raises(ConfigError) as info:
        check_url(url)
    assert "s3cret" not in str(info.value)
