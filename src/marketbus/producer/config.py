"""The producer's configuration: what ``marketbus produce --config FILE`` reads.

Producer-only, so the light consumer install (no ccxt) does not carry it: exchanges
and their ccxt.pro construction, stream caps, and how the producer runs. The file is
validated by `marketbus.shared.config.build_config` like any marketbus config, with
``MARKETBUS__*`` environment overrides, and every error names the bad key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from marketbus.producer.reconcile import ReconcilePolicy
from marketbus.shared.config import PositiveFloat, PositiveInt, RedisConfig, StreamCaps, load_config
from marketbus.shared.errors import ConfigError
from marketbus.shared.names import check_kind, check_part

NonNegativeInt = Annotated[int, Meta(ge=0)]


class ExchangeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One exchange: what to watch and how to construct its ccxt.pro client.

    ``batch_watch = true`` watches each kind of all symbols with one ccxt multi-symbol
    call (``watchTickers``, ``watchOHLCVForSymbols``...) where the exchange has it.
    Off by default: in ccxt 4.5.90 those calls starve symbols (when frames for several
    symbols arrive in one read, the first symbol always wins ccxt's race and the others'
    data is never returned), while single-symbol calls share the same socket anyway.
    """

    id: str
    symbols: Annotated[list[str], Meta(min_length=1)]
    kinds: Annotated[list[str], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["ohlcv.1m", "ticker"]
    )
    ccxt: dict[str, Any] = msgspec.field(default_factory=dict)
    book_depth: PositiveInt = 20
    book_interval_ms: NonNegativeInt = 0
    strict: bool = False
    batch_watch: bool = False

    def __post_init__(self) -> None:
        check_part("exchange id", self.id)
        for kind in self.kinds:
            check_kind(kind)


class ProducerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the producer runs: timing, batching, memory bounds, fencing and metrics.

    One producer per exchange holds the lease ``{ns}:{exchange}:lease`` (renewed every
    third of ``lease_ttl_s``). A second one for the same exchange either waits as a hot
    standby and takes over when the lease expires (``on_conflict = "standby"``) or
    exits with FencedError naming the holder (``"exit"``). ``metrics_port`` serves
    Prometheus metrics on that port (0: any free port) with the ``metrics`` extra, on
    ``metrics_host`` only: loopback by default, ``"0.0.0.0"`` in a container that a
    Prometheus outside it scrapes.

    ``reconcile_candles`` checks every closed candle once against the exchange's REST
    OHLCV, ``reconcile_after_ms`` after it closed, and re-sends it closed if the final
    values differ; a feed checks at most once per ``reconcile_every_ms`` (one request
    covers every candle closed since its last check), which bounds the REST rate at
    (ohlcv feeds) / ``reconcile_every_ms`` per exchange (docs/operations.md).
    """

    close_grace_ms: NonNegativeInt = 2_000
    reconcile_candles: bool = True
    reconcile_after_ms: NonNegativeInt = 5_000
    reconcile_every_ms: PositiveInt = 60_000
    heartbeat_s: PositiveFloat = 5.0
    stale_after_s: PositiveFloat = 30.0
    publish_batch: PositiveInt = 512
    queue_max_messages: PositiveInt = 200_000
    backoff_initial_s: PositiveFloat = 0.5
    backoff_max_s: PositiveFloat = 30.0
    shutdown_timeout_s: PositiveFloat = 10.0
    on_conflict: Literal["standby", "exit"] = "standby"
    lease_ttl_s: Annotated[float, Meta(ge=0.3)] = 10.0
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    metrics_host: Annotated[str, Meta(min_length=1)] = "127.0.0.1"

    def reconcile_policy(self) -> ReconcilePolicy | None:
        """How closed candles are checked over REST (None: ``reconcile_candles`` off)."""
        if not self.reconcile_candles:
            return None
        return ReconcilePolicy(self.reconcile_after_ms, self.reconcile_every_ms)


class ProducerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole ``marketbus produce --config FILE`` file."""

    exchanges: Annotated[list[ExchangeConfig], Meta(min_length=1)]
    redis: RedisConfig = RedisConfig()
    streams: StreamCaps = StreamCaps()
    producer: ProducerSettings = ProducerSettings()

    def __post_init__(self) -> None:
        """One entry per exchange id: the lease is per exchange, so a second entry for
        the same id (whatever its options) would wait as a standby for the first, forever
        and silently."""
        first: dict[str, int] = {}
        for index, ex in enumerate(self.exchanges):
            seen = first.setdefault(ex.id, index)
            if seen != index:
                raise ConfigError(f"exchanges[{index}].id {ex.id!r} repeats exchanges[{seen}]")

    def exchange(self, exchange_id: str) -> ExchangeConfig:
        for ex in self.exchanges:
            if ex.id == exchange_id:
                return ex
        known = ", ".join(ex.id for ex in self.exchanges)
        raise ConfigError(f"exchange {exchange_id!r} is not in the config (it has: {known})")


def load_producer_config(
    path: str | Path, *, environ: Mapping[str, str] | None = None
) -> ProducerConfig:
    """Read the producer's TOML file, applying ``MARKETBUS__*`` environment overrides."""
    return load_config(path, ProducerConfig, environ=environ)
