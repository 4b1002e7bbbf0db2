"""History: record the bus into a Parquet dataset, replay it, read it back.

- `Recorder` (``marketbus record``): follows streams from their last recorded entry
  and writes Hive-partitioned Parquet (``exchange=/kind=/symbol=/date=``), resumable
  exactly after a crash; what it could not get back becomes gap rows.
- `replay` (``marketbus replay``): publishes recorded messages onto another namespace,
  in exchange-time order, exactly as a producer would.
- `history`: a feed's candles or trades from the archive, then from its stream.
- `latest_candles`: the read rule for candle corrections (last value per ts_ms wins).

Needs the ``record`` extra (pyarrow). See docs/recording.md.
"""

from marketbus.archive.candles import latest_by_time, latest_candles
from marketbus.archive.errors import ArchiveError, ArchiveFileError
from marketbus.archive.history import HistoryReader, history
from marketbus.archive.options import RecordOptions, ReplayOptions
from marketbus.archive.recorder import Recorder
from marketbus.archive.recording import RecorderStats
from marketbus.archive.replay import ReplayStats, replay

__all__ = [
    "ArchiveError",
    "ArchiveFileError",
    "HistoryReader",
    "RecordOptions",
    "Recorder",
    "RecorderStats",
    "ReplayOptions",
    "ReplayStats",
    "history",
    "latest_by_time",
    "latest_candles",
    "replay",
]
