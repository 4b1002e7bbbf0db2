"""The producer's write to a Redis Cluster: many feeds, one round trip per node.

Feed names carry no ``{hashtag}``, so a feed's stream and its sharded channel share one
slot and live on the node that owns it: `publish_batch` sends each node its share of a
batch as one pipeline, all nodes in parallel, and no command is cross-slot. The
cluster client itself comes from `marketbus.shared.cluster`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from marketbus.shared.names import STREAM_FIELD


class Write(Protocol):
    """One message to send, as the producer's ``Outgoing`` has it: PUBLISH *payload*
    on *channel* and, unless *stream* is None, XADD it as *entry_id* capped ``MAXLEN ~
    maxlen``. (A Protocol, so tests and tools can hand in their own records.)"""

    @property
    def channel(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def stream(self) -> str | None: ...
    @property
    def entry_id(self) -> str: ...
    @property
    def maxlen(self) -> int: ...


async def publish_batch(
    cluster: RedisCluster, batch: Sequence[Write], *, sharded: bool = True
) -> list[ResponseError | None]:
    """(S)PUBLISH then XADD every item: one pipelined round trip per node, in parallel.

    Same contract as the producer's ``Transport.write``: returns per item the error
    Redis answered (its XADD's, e.g. an ID not above the stream's last one, which
    means another producer writes the feed; else its publish's), None when fine.
    Per feed, order is kept: a feed's channel and stream share one slot, so all its
    commands go to one node, in input order, on one connection. *sharded* selects
    SPUBLISH (pass `marketbus.shared.cluster.has_sharded_pubsub`) or global PUBLISH.
    Link failures raise redis ``ConnectionError``/``TimeoutError``; any prefix of the
    batch (per node) may then have been applied, and re-sending is safe: an already
    written ID is refused and readers drop a duplicate publish by ``(run, seq)``.
    """
    if not batch:
        return []
    publish = "SPUBLISH" if sharded else "PUBLISH"
    pipe = cluster.pipeline(transaction=False)
    for item in batch:
        pipe.execute_command(publish, item.channel, item.payload)
        if item.stream is not None:
            xadd = ("XADD", item.stream, "MAXLEN", "~", item.maxlen, item.entry_id)
            pipe.execute_command(*xadd, STREAM_FIELD, item.payload)
    replies = await pipe.execute(raise_on_error=False)
    errors: list[ResponseError | None] = []
    position = 0
    for item in batch:
        item_replies = replies[position : position + (1 if item.stream is None else 2)]
        position += len(item_replies)
        error: ResponseError | None = None
        for reply in reversed(item_replies):  # the XADD's error wins over the publish's
            if isinstance(reply, ResponseError):
                error = reply
            elif isinstance(reply, BaseException):
                raise reply
            if error is not None:
                break
        errors.append(error)
    return errors
