"""The fast RESP transport for the hot paths: asyncio.Protocol + hiredis, no redis-py.

- `PipelineWriter`: pipelined commands (XADD + PUBLISH) with counted, checked replies.
- `SubscriberConnection`: SUBSCRIBE/PSUBSCRIBE with batched delivery.

Both open from a `RedisConfig` exactly as `marketbus.shared.connection.client` does
(same URL forms, AUTH, SELECT, TLS files). redis-py stays in charge of everything
else: setup, backfill (XRANGE), the catalog, cluster.
"""

from marketbus.shared.transport.endpoint import Endpoint
from marketbus.shared.transport.subscriber import BatchHandler, PubSubMessage, SubscriberConnection
from marketbus.shared.transport.writer import PipelineWriter

__all__ = [
    "BatchHandler",
    "Endpoint",
    "PipelineWriter",
    "PubSubMessage",
    "SubscriberConnection",
]
