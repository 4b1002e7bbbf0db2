"""Configuration as validated msgspec Structs: a TOML file plus environment overrides.

What both sides read: `RedisConfig` (where the bus is, its namespace and encoding), the
loaders, `build_config` and `load_config`, which validate into any Struct: the
producer's file (`marketbus.producer.config`) or a strategy's own settings, and
`redis_url_from`, where a command-line tool finds its Redis URL (``--redis``, else
``MARKETBUS_REDIS_URL``, else the file ``MARKETBUS_REDIS_URL_FILE`` names).

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
from typing import Annotated, Any, Final, TypeVar

import msgspec
from msgspec import Meta

from marketbus.shared.codecs import Encoding
from marketbus.shared.errors import ConfigError
from marketbus.shared.names import DEFAULT_NS, timeframe_of
from marketbus.shared.urls import check_url, redact

ENV_PREFIX: Final = "MARKETBUS__"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
REDIS_URL_ENV: Final = "MARKETBUS_REDIS_URL"
REDIS_URL_FILE_ENV: Final = "MARKETBUS_REDIS_URL_FILE"
MAX_URL_LINE: Final = 4096
"""Characters read from ``MARKETBUS_REDIS_URL_FILE``: a URL, not whatever file it names."""

PositiveFloat = Annotated[float, Meta(gt=0)]
PositiveInt = Annotated[int, Meta(gt=0)]


class RedisConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the bus lives. ``url`` accepts redis://, rediss:// (TLS) and unix://.

    ``cluster = true`` makes ``url`` one seed node of a Redis Cluster (db 0, no unix
    socket): feeds then spread over the shards and pub/sub goes sharded (SPUBLISH /
    SSUBSCRIBE) where the server has it; see `marketbus.shared.cluster`. ``url`` is
    checked when the config is built (`marketbus.shared.urls.check_url`: a db that is
    not a number is an error, not db 0) and its repr shows it redacted.
    """

    url: str = DEFAULT_REDIS_URL
    namespace: str = DEFAULT_NS
    encoding: Encoding = "json"
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    connect_timeout_s: PositiveFloat = 5.0
    cluster: bool = False

    def __post_init__(self) -> None:
        check_url(self.url)

    def __repr__(self) -> str:
        """Like the generated repr, but ``url`` with its password redacted: configs get
        logged and shown in tracebacks, credentials must not be."""
        shown = msgspec.structs.asdict(self) | {"url": redact(self.url)}
        return "RedisConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def redis_url_from(cli_value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The Redis URL of a command-line tool, keeping credentials out of ``ps``.

    In order: *cli_value* (``--redis``), the variable ``MARKETBUS_REDIS_URL``, the first
    line of the file named by ``MARKETBUS_REDIS_URL_FILE`` (e.g. a mounted secret), else
    `DEFAULT_REDIS_URL`. Empty variables count as unset. The URL is checked
    (`marketbus.shared.urls.check_url`) and a ConfigError names where it came from.
    """
    env = os.environ if environ is None else environ
    if cli_value is not None:
        url, where = cli_value, "--redis"
    elif env.get(REDIS_URL_ENV):
        url, where = env[REDIS_URL_ENV], REDIS_URL_ENV
    elif env.get(REDIS_URL_FILE_ENV):
        path = env[REDIS_URL_FILE_ENV]
        url, where = _first_line(path), f"{path} ({REDIS_URL_FILE_ENV})"
    else:
        return DEFAULT_REDIS_URL
    check_url(url, where=where)
    return url


def _first_line(path: str) -> str:
    """The first line of *path*, stripped; ConfigError naming it if there is none."""
    named = f"{REDIS_URL_FILE_ENV} names {path!r}"
    try:
        with open(path, encoding="utf-8") as file:
            line = file.readline(MAX_URL_LINE + 1).strip()
    except OSError as exc:
        raise ConfigError(f"{named}, which cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{named}, which cannot be read: not UTF-8 text") from None
    if not line:
        raise ConfigError(f"{named}, whose first line is empty")
    if len(line) > MAX_URL_LINE:
        raise ConfigError(f"{named}, whose first line is longer than {MAX_URL_LINE} characters")
    return line


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
    except ConfigError as exc:  # a Struct's own cross-field check, e.g. a repeated id
        raise ConfigError(f"{source}: {exc}") from None


def load_config(
    path: str | Path,
    kind: type[T],
    *,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Read a TOML file into *kind*, applying ``MARKETBUS__*`` environment overrides.

    The producer's file has its own loader, `marketbus.producer.config.load_producer_config`.
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    return build_config(kind, data, environ=environ, source=str(file))


class StreamCaps(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``MAXLEN ~`` per kind: how much history a late joiner can backfill. Shared by every
    writer of feeds: the producer, and `marketbus replay`."""

    ohlcv: PositiveInt = 10_000
    ticker: PositiveInt = 10_000
    trades: PositiveInt = 100_000
    book: PositiveInt = 10_000
    status: PositiveInt = 10_000

    def for_kind(self, kind: str) -> int:
        cap: int = getattr(self, "ohlcv" if timeframe_of(kind) else kind)
        return cap
