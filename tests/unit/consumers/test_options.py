"""Subscriber options: one validated Struct, keyword arguments over it (no I/O)."""

from __future__ import annotations

from typing import get_type_hints

import msgspec
import pytest

from marketbus.consumers import Backoff, BufferSizes, Subscriber, SyncSubscriber
from marketbus.consumers.options import (
    OptionKeywords,
    SubscriberOptions,
    resolve_options,
    with_sizes,
)
from marketbus.shared.errors import ConfigError

URL = "redis://127.0.0.1:1/0"  # never connected to: nothing here starts


def test_keywords_win_over_options_and_shortcuts_fold_into_sizes() -> None:
    base = SubscriberOptions(max_pending=7, sizes=BufferSizes(candles=10, trades=20))
    options = resolve_options(base, {"max_pending": 9, "candles": 3, "on_error": "log"})
    assert options.max_pending == 9 and options.on_error == "log"
    assert options.sizes == BufferSizes(candles=3, trades=20)
    assert resolve_options() == SubscriberOptions()


def test_a_keyword_given_as_none_means_not_given() -> None:
    backoff = Backoff(initial_s=0.5)
    options = resolve_options(SubscriberOptions(backoff=backoff), {"backoff": None, "sizes": None})
    assert options.backoff == backoff and options.sizes == BufferSizes()


@pytest.mark.parametrize(
    ("keywords", "named"),
    [
        ({"on_error": "ignore"}, "on_error"),
        ({"transport": "zmq"}, "transport"),
        ({"delivery": "later"}, "delivery"),
        ({"fetch_workers": 0}, "fetch_workers"),
        ({"max_pending": -1}, "max_pending"),
        ({"poll_s": 0.0}, "poll_s"),
        ({"rescan_s": 0}, "rescan_s"),
        ({"candles": 0}, "candles"),
        ({"fetch_worker": 2}, "fetch_worker"),
    ],
)
def test_a_bad_option_is_a_config_error_naming_it(keywords: object, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        resolve_options(None, keywords)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=named):
        Subscriber(URL, **keywords)  # type: ignore[arg-type]


def test_sync_subscriber_validates_its_options_before_starting_anything() -> None:
    with pytest.raises(ConfigError, match="fetch_workers"):
        SyncSubscriber(URL, fetch_workers=0)
    sub = SyncSubscriber(URL, options=SubscriberOptions(poll_s=0.5), candles=12)
    assert sub.options.poll_s == 0.5 and sub.options.sizes.candles == 12


def test_subscriber_takes_options_and_keywords() -> None:
    sub = Subscriber(URL, options=SubscriberOptions(namespace="x", fetch_workers=2), trades=5)
    assert sub.namespace == "x" and sub.options.fetch_workers == 2
    assert sub.sizes.trades == 5


def test_with_sizes_keeps_the_base_when_nothing_is_overridden() -> None:
    base = BufferSizes(candles=4)
    assert with_sizes(base) is base
    assert with_sizes(base, trades=6) == BufferSizes(candles=4, trades=6)


def test_the_keywords_are_the_options_plus_the_size_shortcuts() -> None:
    """`OptionKeywords` (the typed keyword arguments) and `SubscriberOptions` list the same
    options: one cannot gain a field the other lacks."""
    names = {field.name for field in msgspec.structs.fields(SubscriberOptions)}
    assert set(get_type_hints(OptionKeywords)) == names | {"candles", "trades"}
