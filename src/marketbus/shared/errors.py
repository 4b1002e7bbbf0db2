"""The exceptions marketbus raises, one small tree under `MarketbusError`.

Each class says when it is raised, so callers can catch exactly what they can handle.
"""


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


class NormalizeError(ContractError):
    """An exchange record handed over by ccxt cannot be turned into a wire message."""


class RedisUnavailableError(MarketbusError):
    """Redis cannot be reached or refused the credentials. The message names the URL
    with its password redacted."""


class FencedError(MarketbusError):
    """Another producer already writes the same feeds (stream ID collision or lease)."""
