"""The recorder's and the replayer's options: validated Structs, also a config file's
``[record]`` section (with ``[redis]`` beside it)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from msgspec import Meta

from marketbus.shared.config import PositiveFloat, PositiveInt, RedisConfig
from marketbus.shared.errors import ConfigError
from marketbus.shared.names import check_part


class RecordOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What `marketbus record` follows and how it writes.

    ``feeds``: glob patterns over stream keys of ONE namespace (``md:binance:*``); the
    namespace part must be literal. A feed's rows go to a file when it holds
    ``file_rows`` rows or its oldest row is ``roll_s`` old; when all feeds together
    hold ``max_buffered_rows``, the largest are written first (memory bound).
    """

    feeds: Annotated[list[str], Meta(min_length=1)]
    out: Annotated[str, Meta(min_length=1)]
    roll_s: PositiveFloat = 300.0
    file_rows: PositiveInt = 1_000_000
    max_buffered_rows: PositiveInt = 2_000_000
    read_count: PositiveInt = 1_000
    """XREAD COUNT: entries per stream per read."""
    read_entries: PositiveInt = 50_000
    """Entries one XREAD may return at most (streams per call = this // read_count)."""
    block_ms: PositiveInt = 500
    rescan_s: PositiveFloat = 5.0
    """How often new streams matching ``feeds`` are looked for."""
    fsync: bool = True
    backoff_initial_s: PositiveFloat = 0.2
    backoff_max_s: PositiveFloat = 5.0

    def __post_init__(self) -> None:
        namespaces = {pattern.split(":", 1)[0] for pattern in self.feeds}
        if len(namespaces) != 1:
            raise ConfigError(f"record.feeds {self.feeds}: all patterns must share a namespace")
        (ns,) = namespaces
        if any(c in ns for c in "*?[]") or ":" not in self.feeds[0]:
            raise ConfigError(
                f"record.feeds {self.feeds}: start each pattern with a literal namespace, "
                "like 'md:binance:*'"
            )
        check_part("namespace", ns)

    @property
    def namespace(self) -> str:
        return self.feeds[0].split(":", 1)[0]


class RecordFile(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A config file with a ``[record]`` section (other sections are left alone)."""

    record: RecordOptions
    redis: RedisConfig = RedisConfig()


class ReplayOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What `marketbus replay` publishes, where and how fast.

    ``speed``: exchange time runs this many times faster than real time; None
    (``--fast``) publishes as fast as Redis takes it. ``start_ms``/``end_ms`` bound
    the exchange time (start inclusive, end exclusive); ``feeds`` is a glob over the
    recorded feed names (source namespace).
    """

    source: str
    namespace: str
    speed: PositiveFloat | None = 1.0
    start_ms: int | None = None
    end_ms: int | None = None
    feeds: str = "*"
    batch: PositiveInt = 512
    skip_bad_files: bool = False

    def __post_init__(self) -> None:
        check_part("namespace", self.namespace)


def parse_time_ms(text: str, what: str) -> int:
    """Epoch ms of an ISO 8601 time (``2024-01-31``, ``2024-01-31T12:00:00Z``); a time
    without a zone is UTC."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{what} {text!r} is not an ISO 8601 time like 2024-01-31T12:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)
