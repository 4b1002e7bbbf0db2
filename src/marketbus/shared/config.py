"""Configuration as validated msgspec Structs: a TOML file plus environment overrides.

Environment variables ``MARKETBUS__SECTION__KEY=value`` override file values (``__``
separates path parts; list items are addressed by index, e.g.
``MARKETBUS__EXCHANGES__0__SYMBOLS='["BTC/USDT"]'``). A value is read as JSON when it
parses as JSON, else as a plain string. Every error names the offending key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from msgspec import Meta

from marketbus.shared.codecs import Encoding
from marketbus.shared.errors import ConfigError
from marketbus.shared.names import DEFAULT_NS, check_kind, check_part, timeframe_of

ENV_PREFIX: Final = "MARKETBUS__"

PositiveInt = Annotated[int, Meta(gt=0)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class RedisConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the bus lives. ``url`` accepts redis://, rediss:// (TLS) and unix://.

    ``cluster = true`` makes ``url`` one seed node of a Redis Cluster (db 0, no unix
    socket): feeds then spread over the shards and pub/sub goes sharded (SPUBLISH /
    SSUBSCRIBE) where the server has it; see `marketbus.shared.cluster`.
    """

    url: str = "redis://127.0.0.1:6379/0"
    namespace: str = DEFAULT_NS
    encoding: Encoding = "json"
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    connect_timeout_s: PositiveFloat = 5.0
    cluster: bool = False

    def __repr__(self) -> str:
        """Like the generated repr, but ``url`` with its password redacted: configs get
        logged and shown in tracebacks, credentials must not be."""
        from marketbus.shared.connection import redact  # connection imports this module

        shown = msgspec.structs.asdict(self) | {"url": redact(self.url)}
        return "RedisConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


class StreamCaps(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``MAXLEN ~`` per kind: how much history a late joiner can backfill."""

    ohlcv: PositiveInt = 10_000
    ticker: PositiveInt = 10_000
    trades: PositiveInt = 100_000
    book: PositiveInt = 10_000
    status: PositiveInt = 10_000

    def for_kind(self, kind: str) -> int:
        cap: int = getattr(self, "ohlcv" if timeframe_of(kind) else kind)
        return cap


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
    """

    close_grace_ms: NonNegativeInt = 2_000
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


class ProducerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole ``marketbus produce --config FILE`` file."""

    exchanges: Annotated[list[ExchangeConfig], Meta(min_length=1)]
    redis: RedisConfig = RedisConfig()
    streams: StreamCaps = StreamCaps()
    producer: ProducerSettings = ProducerSettings()

    def exchange(self, exchange_id: str) -> ExchangeConfig:
        for ex in self.exchanges:
            if ex.id == exchange_id:
                return ex
        known = ", ".join(ex.id for ex in self.exchanges)
        raise ConfigError(f"exchange {exchange_id!r} is not in the config (it has: {known})")


T = TypeVar("T")


def env_overrides(environ: Mapping[str, str]) -> list[tuple[list[str], Any]]:
    """The ``MARKETBUS__A__B=value`` entries of *environ* as (path, value) pairs."""
    found: list[tuple[list[str], Any]] = []
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in key[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError(f"environment variable {key}: empty path part")
        try:
            value: Any = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            value = raw
        found.append((path, value))
    return found


def _apply(data: dict[str, Any], path: list[str], value: Any, origin: str) -> None:
    node: Any = data
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{origin}: {'.'.join(path[:i])} has no item {part}")
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"{origin}: {'.'.join(path[:i])} is not a table or list")


def _key_path(message: str) -> str:
    """msgspec says ``... - at `$.exchanges[0].symbols```; we say ``exchanges[0].symbols``."""
    if " - at `$." in message:
        head, _, where = message.partition(" - at `$.")
        return f"{where.rstrip('`')}: {head}"
    return message


def build_config(
    kind: type[T],
    data: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    source: str = "config",
) -> T:
    """Validate *data* (plus env overrides) into *kind*; ConfigError names the bad key."""
    merged: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(data))
    for path, value in env_overrides(os.environ if environ is None else environ):
        _apply(merged, path, value, f"environment MARKETBUS__{'__'.join(path).upper()}")
    try:
        return msgspec.convert(merged, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_key_path(str(exc))}") from None


def load_config(
    path: str | Path,
    kind: type[T] = ProducerConfig,  # type: ignore[assignment]
    *,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Read a TOML file into *kind*, applying ``MARKETBUS__*`` environment overrides."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    return build_config(kind, data, environ=environ, source=str(file))
