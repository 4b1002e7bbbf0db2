"""`SubscriberOptions`: how a `Subscriber` runs, as one validated Struct.

``Subscriber(url, candles=500, on_error="log")`` and ``Subscriber(url,
options=SubscriberOptions(...))`` end up in the same place: `resolve_options` merges the
keyword arguments (`OptionKeywords`) over the options, folds the ``candles`` / ``trades``
shortcuts into the buffer sizes and validates the result, so a bad value is refused
when the subscriber is made, with a `ConfigError` naming the option. Callbacks are not
options: they are listeners (`marketbus.consumers.listeners`).
"""

from __future__ import annotations

import os
from typing import Annotated, Final, Literal, TypeAlias, TypedDict, TypeVar

import msgspec
from msgspec import Meta

from marketbus.consumers.engine import BufferSizes
from marketbus.shared.backoff import Backoff
from marketbus.shared.errors import ConfigError

ErrorPolicy: TypeAlias = Literal["raise", "log"]
"""What an exception from a listener's callback does: ``raise`` stops the subscriber
(the error is raised from the next ``await`` on it); ``log`` logs it, counts it in
``stats.callback_errors`` and goes on with the next update."""
ERROR_POLICIES: Final = ("raise", "log")

DeliveryMode: TypeAlias = Literal["queued", "inline"]
"""How a callback listener is called: ``queued`` (default) from its own task behind a
`Mailbox`, at its own pace, with conflation and read-back when it falls behind; or
``inline``, plain functions only, called from the read path as each update is applied
(no task switch: the lowest latency; a slow callback holds up the socket)."""
DELIVERY_MODES: Final = ("queued", "inline")

TransportKind: TypeAlias = Literal["fast", "redis-py"]
"""Pub/sub on one server: ``fast`` (`FastPubSubTransport`, the default) or ``redis-py``
(`PubSubTransport`). Cluster mode always uses `ShardedPubSubTransport`."""
TRANSPORTS: Final = ("fast", "redis-py")

PositiveInt = Annotated[int, Meta(gt=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class SubscriberOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything about how a `Subscriber` runs except where Redis is and the callbacks.

    Build it with `resolve_options` (or pass it as ``Subscriber(options=...)``, which
    validates it): a plain constructor call does not check the constraints.
    """

    namespace: str | None = None
    """Feed namespace (None: the one of the `RedisConfig`)."""
    sizes: BufferSizes = BufferSizes()
    """Buffer sizes of every feed, unless `Subscriber.subscribe` says otherwise."""
    max_pending: PositiveInt = 100_000
    """Must-deliver updates a queued listener may have waiting before it reads back."""
    backoff: Backoff = Backoff()
    """Delays between reconnect and stream-read attempts."""
    fetch_workers: PositiveInt = 4
    """Stream reads (backfill, repair, resume) run at once."""
    ready_timeout_s: PositiveFloat = 30.0
    """How long `Subscriber.ready` (and a waiting subscribe) waits for a backfill."""
    poll_s: PositiveFloat = 1.0
    """Longest wait of the read loop before it looks for new work."""
    on_error: ErrorPolicy = "raise"
    """Default error policy of callbacks (`ErrorPolicy`)."""
    rescan_s: PositiveFloat = 5.0
    """Cluster mode: how often patterns are expanded against the catalog."""
    transport: TransportKind = "fast"
    """Pub/sub client on one server (`TransportKind`)."""
    delivery: DeliveryMode = "queued"
    """Default delivery of callbacks (`DeliveryMode`)."""
    max_run_ahead_s: PositiveFloat = 3600.0
    """A message whose run (its producer's start, epoch ms) is further ahead of this
    reader's clock is rejected as suspect, even from a stream (docs/wire-contract.md,
    "What a reader trusts")."""
    max_pattern_feeds: PositiveInt = 10_000
    """Channels (feeds and their status channels) patterns may bring in; messages on
    further new channels are counted in ``stats.refused`` and skipped."""
    archive: str | None = None
    """Directory of a ``marketbus record`` archive (needs pyarrow: the ``record`` extra):
    `Subscriber.history` reads it, and a candle buffer whose stream holds fewer closed
    candles than its size fills its older part from it."""


class OptionKeywords(TypedDict, total=False):
    """The keyword arguments of ``Subscriber(...)`` that are options: the fields of
    `SubscriberOptions`, plus ``candles`` / ``trades`` as shortcuts into ``sizes``."""

    namespace: str | None
    sizes: BufferSizes | None
    candles: int | None
    trades: int | None
    max_pending: int
    backoff: Backoff | None
    fetch_workers: int
    ready_timeout_s: float
    poll_s: float
    on_error: ErrorPolicy
    rescan_s: float
    transport: TransportKind
    delivery: DeliveryMode
    max_run_ahead_s: float
    max_pattern_feeds: int
    archive: str | os.PathLike[str] | None


def resolve_options(
    options: SubscriberOptions | None = None, keywords: OptionKeywords | None = None
) -> SubscriberOptions:
    """*options* (default: the defaults) with *keywords* over them, validated.

    A keyword given as None (``sizes``, ``backoff``, ``candles``, ``trades``) means
    "not given". ConfigError names the bad option.
    """
    fields: dict[str, object] = {} if options is None else msgspec.structs.asdict(options)
    given = keywords or {}
    fields.update(
        (key, value)
        for key, value in given.items()
        if value is not None and key not in ("candles", "trades")
    )
    archive = fields.get("archive")
    if isinstance(archive, os.PathLike):  # a Path: kept as text
        fields["archive"] = os.fspath(archive)
    candles, trades = given.get("candles"), given.get("trades")
    resolved = _convert(fields, SubscriberOptions, "subscriber option")
    sizes = with_sizes(resolved.sizes, candles=candles, trades=trades)
    if sizes is resolved.sizes:
        return resolved
    return msgspec.structs.replace(resolved, sizes=sizes)


def with_sizes(
    base: BufferSizes, *, candles: int | None = None, trades: int | None = None
) -> BufferSizes:
    """*base* with the ``candles`` / ``trades`` shortcuts applied (validated)."""
    overrides = {k: v for k, v in (("candles", candles), ("trades", trades)) if v is not None}
    if not overrides:
        return base
    return _convert(msgspec.structs.asdict(base) | overrides, BufferSizes, "buffer size")


S = TypeVar("S", SubscriberOptions, BufferSizes)


def _convert(fields: dict[str, object], kind: type[S], what: str) -> S:
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        # msgspec says where: "... - at `$.on_error`"; say it as the option's name
        message = str(exc).replace("`$.", "`")
        raise ConfigError(f"{what}: {message}") from None
