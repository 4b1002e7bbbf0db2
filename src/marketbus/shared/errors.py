"""The exceptions marketbus raises, one small tree under `MarketbusError`.

Each class says when it is raised, so callers can catch exactly what they can handle.
The transport errors also derive from the matching redis-py exception, so code written
against redis-py (``except redis.exceptions.ConnectionError``) handles both transports.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketbus.shared.resp import is_xadd_id_error


class MarketbusError(Exception):
    """Base class of every error marketbus raises on purpose."""


class ConfigError(MarketbusError):
    """A configuration file, environment override or argument is invalid.

    The message names the offending key (e.g. ``exchanges[0].symbols``) and the source.
    """


class ContractError(MarketbusError):
    """Data does not follow the wire contract (SPEC.md).

    Raised for payloads that do not decode into a known message and for malformed
    feed names. Readers count and skip such payloads rather than stop.
    """


class FeedNameError(ContractError, ValueError):
    """A feed name or one of its parts (namespace, exchange, kind, symbol) is malformed."""


class EntryIdError(ContractError, ValueError):
    """A stream entry ID is not ``{run}-{seq}`` (SPEC "Streams"): a foreign entry."""


class NormalizeError(ContractError):
    """An exchange record handed over by ccxt cannot be turned into a wire message."""


class RedisUnavailableError(MarketbusError):
    """Redis cannot be reached or refused the credentials. The message names the URL
    with its password redacted."""


class FencedError(MarketbusError):
    """Another producer already writes the same feeds (stream ID collision or lease)."""


class TransportError(MarketbusError):
    """The fast RESP transport (`marketbus.shared.transport`) could not do its job."""


class ConnectionLostError(TransportError, RedisConnectionError):
    """The connection to Redis closed or stopped answering.

    Raised by every later call on that connection. ``unconfirmed`` counts the commands
    written whose replies never came: Redis may or may not have applied them, so a
    publisher resumes from the stream's last ID and a subscriber backfills from it.
    """

    def __init__(self, message: str, unconfirmed: int = 0) -> None:
        super().__init__(message)
        self.unconfirmed = unconfirmed


class ReplyTimeoutError(ConnectionLostError, RedisTimeoutError):
    """Redis did not answer within the deadline; the connection was dropped."""


@dataclass(frozen=True, slots=True)
class ReplyFailure:
    """One command of a pipeline that Redis answered with an error.

    ``tag`` is what the caller passed with the commands, ``index`` the reply's position
    among that send's replies, ``message`` Redis's error text.
    """

    tag: object
    index: int
    message: str

    @property
    def is_xadd_id_error(self) -> bool:
        """The XADD ID was not above the stream's top: another writer owns the feed."""
        return is_xadd_id_error(self.message)


class CommandError(TransportError, RedisResponseError):
    """Redis answered one or more pipelined commands with an error reply.

    The connection stays usable. ``failures`` says which commands failed and why
    (``dropped`` counts further failures beyond the kept bound); a producer maps
    `ReplyFailure.is_xadd_id_error` to `FencedError`.
    """

    def __init__(self, failures: tuple[ReplyFailure, ...], dropped: int = 0) -> None:
        first = failures[0]
        extra = len(failures) - 1 + dropped
        more = f" (and {extra} more)" if extra else ""
        super().__init__(f"Redis refused a command{more}: {first.message}")
        self.failures = failures
        self.dropped = dropped


class SubscriberError(MarketbusError):
    """Base class of the consumer SDK's errors (`marketbus.consumers`)."""


class NotSubscribedError(SubscriberError, KeyError):
    """A buffer was asked for a feed this subscriber does not follow."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SubscriberClosedError(SubscriberError):
    """The subscriber is closed, or stopped because of the error it is chained from
    (a listener callback that raised, or an internal failure)."""


class SubscriberFailedError(SubscriberClosedError):
    """The subscriber stopped because of an error (a listener callback that raised under
    ``on_error="raise"``, or an internal failure), which it is chained from
    (``__cause__``). Raised by every ``await`` on the subscriber and by its data
    accessors afterwards, so a strategy never reads a dead subscriber's buffers as if
    they were live."""
