"""The machine's floor: the same Redis traffic over plain blocking sockets, no asyncio.

What no Python client can beat on this host, so the asyncio rows can be read against
it: blocking ``send``/``recv`` with TCP_NODELAY, the same RESP commands (`FeedCommands`,
PUBLISH + XADD per message), hiredis for replies and msgspec for payloads, exactly
as the fast transport does, minus the event loop.

- `feed`: the latency feeder's ``sockets`` mode (`bench.feeder` has the spacing).
- `subscribe`: the latency consumer's ``sockets`` side, run in a thread of the
  benchmark process while its event loop only waits for the feeder.
- `write_cpu_us`: CPU per message of one write per 1 ms tick (the overhead floor: what
  a single-message Redis write costs this host's kernel, whatever the client).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import hiredis
import msgspec

from bench.publisher import CAP
from bench.workload import RUN, Workload
from marketbus.shared.codecs import encoder_for
from marketbus.shared.config import RedisConfig
from marketbus.shared.resp import FeedCommands, pack_command
from marketbus.shared.transport.endpoint import Endpoint

TICK_S = 0.001


def connect(url: str) -> socket.socket:
    """A blocking TCP (or unix) socket to the benchmark's private, password-less server."""
    endpoint = Endpoint.from_config(RedisConfig(url=url))
    if endpoint.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(endpoint.path)
        return sock
    assert endpoint.host is not None
    sock = socket.create_connection((endpoint.host, endpoint.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Replies:
    """Counts the replies of a blocking writer; any error reply stops the benchmark."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = hiredis.Reader()
        self.count = 0

    def take(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if isinstance(reply, hiredis.ReplyError):
                raise RuntimeError(f"Redis refused a benchmark command: {reply}")
            self.count += 1

    def drain(self) -> None:
        """Read what has arrived, without waiting."""
        while True:
            try:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if not data:
                raise ConnectionError("Redis closed the benchmark connection")
            self.take(data)

    def wait(self, owed: int) -> None:
        while self.count < owed:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("Redis closed the benchmark connection")
            self.take(data)


def feed(url: str, work: Workload, due: Callable[[int], int]) -> None:
    """Publish *work* in ~1 ms ticks (``due(total)``: how many are due by now), one
    write per tick, stamping ``recv_ns`` right before each message is encoded, as the
    asyncio feeders do."""
    names = work.feed_names()
    messages = work.messages()
    commands = [FeedCommands(name, CAP) for name in names]
    encode = encoder_for("json").encode
    replace = msgspec.structs.replace
    seqs = [0] * len(names)
    sock = connect(url)
    replies = _Replies(sock)
    sent = 0
    out: list[bytes] = []
    while sent < len(messages):
        until = due(len(messages))
        while sent < until:
            index, message = messages[sent]
            seq = seqs[index] = seqs[index] + 1
            payload = encode(replace(message, run=RUN, seq=seq, recv_ns=time.time_ns()))
            cmd = commands[index]
            cmd.append_publish_xadd(out, cmd.entry_id(RUN, seq), payload)
            sent += 1
        sock.sendall(b"".join(out))  # one write per tick, as the asyncio feeders
        out.clear()
        time.sleep(TICK_S)
        replies.drain()
    replies.wait(2 * len(messages))
    sock.close()


def subscribe(
    url: str,
    channels: list[bytes],
    on_message: Callable[[bytes, bytes], bool],
    subscribed: threading.Event,
) -> None:
    """SUBSCRIBE to *channels*, set *subscribed*, then hand each message to
    ``on_message(channel, payload)`` until it returns True."""
    sock = connect(url)
    reader = hiredis.Reader()
    sock.sendall(pack_command("SUBSCRIBE", *channels))
    confirmed = 0
    try:
        while True:
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError("Redis closed the benchmark subscription")
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                if reply[0] == b"message":
                    if on_message(reply[1], reply[2]):
                        return
                elif reply[0] == b"subscribe":
                    confirmed += 1
                    if confirmed == len(channels):
                        subscribed.set()
    finally:
        sock.close()


def write_cpu_us(url: str, ticks: int, run: int) -> float:
    """CPU per message (``process_time``, user + system) of one PUBLISH + XADD write per
    1 ms tick with its replies read, minus the same ticks without writes."""
    work = Workload(ticks, feeds=10)
    names = work.feed_names()
    commands = [FeedCommands(name, CAP) for name in names]
    encode = encoder_for("json").encode
    replace = msgspec.structs.replace
    sock = connect(url)
    replies = _Replies(sock)
    start = time.process_time()
    for _ in range(ticks):
        time.sleep(TICK_S)
    idle = time.process_time() - start
    out: list[bytes] = []
    start = time.process_time()
    for seq, (index, message) in enumerate(work.messages(), 1):
        cmd = commands[index]
        cmd.append_publish_xadd(
            out, cmd.entry_id(run, seq), encode(replace(message, run=run, seq=seq))
        )
        sock.sendall(b"".join(out))
        out.clear()
        time.sleep(TICK_S)
        replies.drain()
    replies.wait(2 * ticks)
    busy = time.process_time() - start
    sock.close()
    return max(busy - idle, 0.0) / ticks * 1e6
