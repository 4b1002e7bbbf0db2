"""Every Redis key and channel name marketbus uses, built and parsed in one place.

A feed (one exchange x one kind x one symbol) has ONE name, used both as its pub/sub
channel and as its stream key: ``{ns}:{exchange}:{kind}:{symbol}``. The symbol comes
last because ccxt symbols may contain ``:`` (``BTC/USDT:USDT``), so a name is parsed
with ``split(":", 3)``.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from marketbus.shared.errors import EntryIdError, FeedNameError

DEFAULT_NS: Final = "md"
SIMPLE_KINDS: Final = frozenset({"ticker", "trades", "book"})
"""The kinds without a timeframe; the others are ``ohlcv.{timeframe}``."""
NEWEST_WINS_KINDS: Final = frozenset({"ticker", "book"})
"""Kinds whose newest message is the whole state: an older one a reader has not seen yet
may be replaced by a newer one (conflated) and a hole in their seqs loses nothing. Every
message of the other kinds (trades, closed candles, status) must reach a reader."""
OHLCV_PREFIX: Final = "ohlcv."
STATUS: Final = "status"
STREAM_FIELD: Final = "d"
"""The one field of every stream entry: ``XADD {feed} ... d {payload}``."""
STREAM_FIELD_BYTES: Final = b"d"

_TIMEFRAME = re.compile(r"^[1-9][0-9]*[smhdwMy]$")
_TIMEFRAME_UNIT_MS: Final = {
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "M": 2_592_000_000,
    "y": 31_536_000_000,
}


def check_part(what: str, value: str) -> str:
    """Return *value* if it may stand as a ``:``-free part of a name, else raise."""
    if not value or ":" in value or any(c.isspace() for c in value):
        raise FeedNameError(f"{what} {value!r} must be non-empty, without ':' or whitespace")
    return value


def check_kind(kind: str) -> str:
    """Return *kind* if it is ``ticker``, ``trades``, ``book`` or ``ohlcv.{timeframe}``."""
    if kind in SIMPLE_KINDS:
        return kind
    if kind.startswith(OHLCV_PREFIX) and _TIMEFRAME.match(kind[len(OHLCV_PREFIX) :]):
        return kind
    raise FeedNameError(
        f"kind {kind!r} is not one of 'ticker', 'trades', 'book', 'ohlcv.<timeframe>' "
        "(timeframe like '1m', '1h')"
    )


def newest_wins(kind: str) -> bool:
    """True for a kind whose newest message is its whole state (`NEWEST_WINS_KINDS`)."""
    return kind in NEWEST_WINS_KINDS


def ohlcv_kind(timeframe: str) -> str:
    """The kind string for candles of *timeframe*: ``ohlcv.1m``."""
    return check_kind(OHLCV_PREFIX + timeframe)


def timeframe_of(kind: str) -> str | None:
    """The timeframe of an ``ohlcv.*`` kind, None for other kinds."""
    return kind[len(OHLCV_PREFIX) :] if kind.startswith(OHLCV_PREFIX) else None


def timeframe_ms(timeframe: str) -> int:
    """Length of one candle of *timeframe* in milliseconds (``1m`` -> 60000)."""
    if not _TIMEFRAME.match(timeframe):
        raise FeedNameError(f"timeframe {timeframe!r} is not like '1m', '5m', '1h', '1d'")
    return int(timeframe[:-1]) * _TIMEFRAME_UNIT_MS[timeframe[-1]]


class Feed(msgspec.Struct, frozen=True):
    """One feed: exchange x kind x symbol within a namespace."""

    ns: str
    exchange: str
    kind: str
    symbol: str

    def __post_init__(self) -> None:
        check_part("namespace", self.ns)
        check_part("exchange", self.exchange)
        check_kind(self.kind)
        if not self.symbol or any(c.isspace() for c in self.symbol):
            raise FeedNameError(f"symbol {self.symbol!r} must be non-empty, without whitespace")

    @property
    def name(self) -> str:
        """The channel name and stream key of this feed."""
        return f"{self.ns}:{self.exchange}:{self.kind}:{self.symbol}"

    @property
    def timeframe(self) -> str | None:
        return timeframe_of(self.kind)

    @classmethod
    def parse(cls, name: str) -> Feed:
        """Parse a feed name; raises FeedNameError naming what is wrong."""
        parts = name.split(":", 3)
        if len(parts) != 4:
            raise FeedNameError(
                f"feed name {name!r} is not '{{ns}}:{{exchange}}:{{kind}}:{{symbol}}'"
            )
        ns, exchange, kind, symbol = parts
        return cls(ns, exchange, kind, symbol)


def feed_name(ns: str, exchange: str, kind: str, symbol: str) -> str:
    """Shortcut for ``Feed(ns, exchange, kind, symbol).name`` (validates)."""
    return Feed(ns, exchange, kind, symbol).name


def status_name(ns: str, exchange: str) -> str:
    """Stream key and channel of an exchange's status events: ``{ns}:{exchange}:status``."""
    return f"{check_part('namespace', ns)}:{check_part('exchange', exchange)}:{STATUS}"


def lease_key(ns: str, exchange: str) -> str:
    """The string key whose holder is the one producer writing *exchange*'s feeds:
    ``{ns}:{exchange}:lease``."""
    return f"{check_part('namespace', ns)}:{check_part('exchange', exchange)}:lease"


def standby_key(ns: str, exchange: str, holder: str) -> str:
    """A standby producer's presence, expiring with the lease TTL while it waits:
    ``{ns}:{exchange}:standby:{holder}`` (value: the same JSON as the lease)."""
    return f"{standby_prefix(ns, exchange)}{holder}"


def standby_prefix(ns: str, exchange: str) -> str:
    """What every standby key of *exchange* starts with (``SCAN MATCH {prefix}*``)."""
    return f"{check_part('namespace', ns)}:{check_part('exchange', exchange)}:standby:"


def catalog_key(ns: str) -> str:
    """Hash listing every feed: field = feed name, value = JSON FeedInfo."""
    return f"{check_part('namespace', ns)}:feeds"


def exchange_pattern(ns: str, exchange: str = "*") -> str:
    """A PSUBSCRIBE pattern for every channel of one exchange (or all)."""
    return f"{check_part('namespace', ns)}:{exchange}:*"


def is_status_name(name: str) -> bool:
    """True for ``{ns}:{exchange}:status``."""
    parts = name.split(":")
    return len(parts) == 3 and parts[2] == STATUS


def split_name(name: str) -> tuple[str, str, str, str]:
    """``(ns, exchange, kind, symbol)`` of a feed name without validating the parts.

    For hot paths and names this process made itself; `Feed.parse` validates.
    Raises FeedNameError when *name* does not have four parts.
    """
    parts = name.split(":", 3)
    if len(parts) != 4:
        raise FeedNameError(f"feed name {name!r} is not '{{ns}}:{{exchange}}:{{kind}}:{{symbol}}'")
    return parts[0], parts[1], parts[2], parts[3]


def ns_of(name: str) -> str:
    """The namespace of a feed or status name (its first part), unvalidated."""
    return name.split(":", 1)[0]


def exchange_of(name: str) -> str:
    """The exchange of a feed or status name (its second part), unvalidated.

    Raises FeedNameError when *name* has no second part.
    """
    parts = name.split(":", 2)
    if len(parts) < 2:
        raise FeedNameError(f"name {name!r} is not '{{ns}}:{{exchange}}:...'")
    return parts[1]


def kind_and_symbol(name: str) -> tuple[str, str]:
    """``(kind, symbol)`` of a feed name, unvalidated (see `split_name`)."""
    _, _, kind, symbol = split_name(name)
    return kind, symbol


def entry_id(run: int, seq: int) -> str:
    """The stream entry ID of message ``(run, seq)``: ``{run}-{seq}`` (SPEC "Streams")."""
    return f"{run}-{seq}"


def parse_entry_id(raw: bytes | str) -> tuple[int, int]:
    """``b"1700000000000-42"`` -> ``(1700000000000, 42)``; EntryIdError if malformed."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    run, sep, seq = text.partition("-")
    if not sep or not (run + seq).isascii() or not run.isdigit() or not seq.isdigit():
        raise EntryIdError(f"stream entry id {text!r} is not '<run>-<seq>'")
    return int(run), int(seq)


# -- producer helper additions -------------------------------------------------------


def exchange_prefix(ns: str, exchange: str) -> str:
    """What every feed and status name of *exchange* starts with: ``{ns}:{exchange}:``."""
    return f"{check_part('namespace', ns)}:{check_part('exchange', exchange)}:"
