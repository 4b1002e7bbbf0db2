"""Where a row lives in the archive: Hive partitions ``exchange=/kind=/symbol=/date=``.

Partition values are escaped so any symbol is a safe directory name on every
filesystem, reversibly: every byte of the UTF-8 form outside ``[A-Za-z0-9_-]`` (and
``.`` except at the start) becomes ``%XX``, as Hive and Spark escape partition values.
``BTC/USDT:USDT`` is ``BTC%2FUSDT%3AUSDT``. pyarrow's and DuckDB's Hive readers decode
``%XX``, so queries see the symbol verbatim. ``date`` is the UTC day of the row's
exchange time (``ts_ms``; the producer's ``recv_ns`` when the exchange gave none).
"""

from __future__ import annotations

import datetime as dt
import string
from functools import lru_cache
from typing import Final
from urllib.parse import unquote

import msgspec

from marketbus.shared.errors import ContractError

DAY_MS: Final = 86_400_000
KEYS: Final = ("exchange", "kind", "symbol", "date")
GAP_KIND: Final = "gap"
"""The ``kind=`` of gap rows: what the recorder could not get back."""
_SAFE: Final = frozenset(string.ascii_letters + string.digits + "_-.")


class PartitionError(ContractError):
    """A directory name is not a partition of a marketbus archive."""


def escape(value: str) -> str:
    """*value* as a filesystem-safe, reversible partition value (`unescape` inverts it)."""
    if not value:
        raise PartitionError("a partition value cannot be empty")
    out = []
    for i, char in enumerate(value):
        if char in _SAFE and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode())
    return "".join(out)


def unescape(text: str) -> str:
    """The value `escape` turned into *text*."""
    return unquote(text, errors="strict")


@lru_cache(maxsize=4096)
def day_text(day: int) -> str:
    """``2024-01-31`` for day number *day* since the epoch (``ts_ms // DAY_MS``)."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def day_of_text(text: str) -> int:
    """The day number of ``2024-01-31`` (inverse of `day_text`)."""
    try:
        return (dt.date.fromisoformat(text) - dt.date(1970, 1, 1)).days
    except ValueError:
        raise PartitionError(f"date {text!r} is not YYYY-MM-DD") from None


def day_of_ms(ms: int) -> int:
    return ms // DAY_MS


class Partition(msgspec.Struct, frozen=True):
    """One leaf directory of the archive: one feed (or its gaps) on one UTC day."""

    exchange: str
    kind: str
    symbol: str
    day: int

    @property
    def path(self) -> str:
        """Relative directory:
        ``exchange=binance/kind=trades/symbol=BTC%2FUSDT/date=2024-01-31``."""
        return (
            f"exchange={escape(self.exchange)}/kind={escape(self.kind)}/"
            f"symbol={escape(self.symbol)}/date={day_text(self.day)}"
        )

    @classmethod
    def parse(cls, path: str) -> Partition:
        """The partition of a relative directory path; PartitionError if it is not one."""
        parts = path.strip("/").split("/")
        if len(parts) != len(KEYS):
            raise PartitionError(f"{path!r} is not {'/'.join(k + '=...' for k in KEYS)}")
        values = []
        for key, part in zip(KEYS, parts, strict=True):
            name, sep, value = part.partition("=")
            if name != key or not sep or not value:
                raise PartitionError(f"{path!r}: {part!r} is not '{key}=...'")
            values.append(unescape(value))
        return cls(values[0], values[1], values[2], day_of_text(values[3]))
