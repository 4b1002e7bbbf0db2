"""PipelineWriter against real private redis-server processes."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import (
    CommandError,
    ConnectionLostError,
    RedisUnavailableError,
    ReplyTimeoutError,
)
from marketbus.shared.resp import FeedCommands, pack_command
from marketbus.shared.transport import PipelineWriter
from tests.integration.transport.conftest import TlsFiles
from tests.support.redis_process import RedisProcess, free_port
from tests.support.waiting import wait_until

FEED = "md:binance:ohlcv.1m:BTC/USDT"


async def test_pipelined_xadd_and_publish_round_trip(redis_url: str, plain: aioredis.Redis) -> None:
    pubsub = plain.pubsub()
    await pubsub.subscribe(FEED)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    writer = await PipelineWriter.open(RedisConfig(url=redis_url))
    commands = FeedCommands(FEED, 1_000)
    payloads = [b'{"type":"ohlcv","seq":%d}' % seq for seq in range(1, 501)]
    for batch in range(0, 500, 100):
        out: list[bytes] = []
        for seq in range(batch + 1, batch + 101):
            commands.append_publish_xadd(out, b"1700-%d" % seq, payloads[seq - 1])
        writer.send_parts(out, replies=200)
        await writer.drain()
    await writer.flush()
    assert writer.pending_replies == 0

    entries = await plain.xrange(FEED)
    assert [entry_id for entry_id, _ in entries] == [b"1700-%d" % s for s in range(1, 501)]
    assert [fields[b"d"] for _, fields in entries] == payloads
    received: list[bytes] = []
    async with asyncio.timeout(10):
        while len(received) < 500:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                received.append(message["data"])
    assert received == payloads
    await pubsub.aclose()
    await writer.aclose()


async def test_xadd_id_collision_surfaces_with_the_callers_tag(redis_url: str) -> None:
    writer = await PipelineWriter.open(RedisConfig(url=redis_url))
    commands = FeedCommands(FEED, 1_000)
    first: list[bytes] = []
    commands.append_xadd(first, b"5-10", b"a")
    writer.send_parts(first, replies=1, tag="first")
    second: list[bytes] = []
    commands.append_publish_xadd(second, b"5-11", b"b")  # fine
    commands.append_publish_xadd(second, b"5-9", b"c")  # below the top: a fenced writer
    writer.send_parts(second, replies=4, tag=["feed-a", "feed-a", "feed-b", "feed-b"])
    with pytest.raises(CommandError) as caught:
        await writer.flush()
    (failure,) = caught.value.failures
    assert failure.tag == ["feed-a", "feed-a", "feed-b", "feed-b"]
    assert failure.index == 3  # PUBLISH, XADD, PUBLISH, XADD: the second XADD
    assert failure.is_xadd_id_error
    assert isinstance(caught.value, redis.exceptions.ResponseError)
    # The connection stays usable after an error reply.
    assert await writer.execute("XLEN", FEED) == 2
    await writer.aclose()


async def test_confirm_gives_each_batch_in_flight_its_own_error_replies(redis_url: str) -> None:
    writer = await PipelineWriter.open(RedisConfig(url=redis_url))
    commands = FeedCommands(FEED + ":confirm", 1_000)
    marks: list[int] = []
    for tag, ids in (("one", [b"7-1", b"7-1"]), ("two", [b"7-2"]), ("three", [b"7-3", b"7-2"])):
        out: list[bytes] = []
        for entry_id in ids:
            commands.append_xadd(out, entry_id, b"x")
        writer.send_parts(out, replies=len(ids), tag=tag)
        marks.append(writer.sent)
        await writer.push()  # on the wire; nothing waits for its replies yet
    first, second, third = [await writer.confirm(mark) for mark in marks]
    assert [(f.tag, f.index, f.is_xadd_id_error) for f in first] == [("one", 1, True)]
    assert second == ()
    assert [(f.tag, f.index) for f in third] == [("three", 1)]
    await writer.flush()  # nothing left to raise: confirm took every error reply
    await writer.aclose()


async def test_confirm_after_a_loss_still_answers_for_replies_that_came(
    redis_url: str, plain: aioredis.Redis
) -> None:
    writer = await PipelineWriter.open(RedisConfig(url=redis_url))
    client_id = await writer.execute("CLIENT", "ID")
    writer.send(pack_command("PING"))
    answered = writer.sent
    writer.send(pack_command("BLPOP", "md:test:never", "30"))  # no reply before the kill
    unanswered = writer.sent
    await writer.push()
    await wait_until(lambda: writer.pending_replies == 1, what="the PING answered")
    await plain.execute_command("CLIENT", "KILL", "ID", client_id)
    await wait_until(lambda: not writer.is_connected, what="the writer to see the kill")
    assert await writer.confirm(answered) == ()
    with pytest.raises(ConnectionLostError):
        await writer.confirm(unanswered)


async def test_execute_returns_values_and_raises_error_replies(redis_url: str) -> None:
    writer = await PipelineWriter.open(RedisConfig(url=redis_url))
    writer.send(pack_command("SET", "k", "v"))
    assert await writer.execute("GET", "k") == b"v"
    with pytest.raises(CommandError, match="unknown command"):
        await writer.execute("NOSUCHCOMMAND")
    assert await writer.execute("PING") == b"PONG"
    await writer.aclose()


async def test_select_db_from_the_url(redis_url: str) -> None:
    writer = await PipelineWriter.open(RedisConfig(url=redis_url.rsplit("/", 1)[0] + "/3"))
    await writer.execute("SET", "where", "db3")
    db3 = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    db0 = aioredis.Redis.from_url(redis_url)
    assert await db3.get("where") == b"db3"
    assert await db0.get("where") is None
    await db3.aclose()
    await db0.aclose()
    await writer.aclose()


async def test_auth_with_an_acl_user_and_a_wrong_password(redis_url: str) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    await admin.execute_command("ACL", "SETUSER", "bus", "on", ">s3cret", "~md:*", "&*", "+@all")
    host = redis_url.removeprefix("redis://")
    try:
        writer = await PipelineWriter.open(RedisConfig(url=f"redis://bus:s3cret@{host}"))
        assert await writer.execute("ACL", "WHOAMI") == b"bus"
        await writer.aclose()
        with pytest.raises(RedisUnavailableError, match="refused the credentials") as caught:
            await PipelineWriter.open(RedisConfig(url=f"redis://bus:wrong@{host}"))
        assert "wrong" not in str(caught.value)  # the password is redacted
        assert "***" in str(caught.value)
    finally:
        await admin.execute_command("ACL", "DELUSER", "bus")
        await admin.aclose()


async def test_server_requiring_a_password_says_so_at_open(
    make_redis_server: Callable[..., RedisProcess],
) -> None:
    server = make_redis_server(["--requirepass", "pw"])
    with pytest.raises(RedisUnavailableError, match=r"refused the credentials.*NOAUTH"):
        await PipelineWriter.open(RedisConfig(url=server.url))
    writer = await PipelineWriter.open(RedisConfig(url=f"redis://:pw@127.0.0.1:{server.port}/0"))
    assert await writer.execute("PING") == b"PONG"
    await writer.aclose()


async def test_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(RedisUnavailableError, match="cannot reach Redis"):
        await PipelineWriter.open(RedisConfig(url=f"redis://127.0.0.1:{free_port()}/0"))


async def test_unix_socket(make_redis_server: Callable[..., RedisProcess], tmp_path: Path) -> None:
    path = tmp_path / "r.sock"
    make_redis_server(["--unixsocket", str(path)])
    writer = await PipelineWriter.open(RedisConfig(url=f"unix://{path}?db=2"))
    await writer.execute("SET", "k", "v")
    assert await writer.execute("CLIENT", "INFO") != b""
    other = aioredis.Redis(unix_socket_path=str(path), db=2)
    assert await other.get("k") == b"v"
    await other.aclose()
    await writer.aclose()


async def test_tls_with_ca_and_client_certificate(
    make_redis_server: Callable[..., RedisProcess], tls_files: TlsFiles
) -> None:
    port = free_port()
    tls_args = [
        *("--tls-port", str(port), "--tls-auth-clients", "yes"),
        *(
            "--tls-cert-file",
            str(tls_files.server_cert),
            "--tls-key-file",
            str(tls_files.server_key),
        ),
        *("--tls-ca-cert-file", str(tls_files.ca)),
    ]
    server = make_redis_server(tls_args)
    config = RedisConfig(
        url=f"rediss://127.0.0.1:{port}/1",
        tls_ca_file=str(tls_files.ca),
        tls_cert_file=str(tls_files.client_cert),
        tls_key_file=str(tls_files.client_key),
    )
    writer = await PipelineWriter.open(config)
    out: list[bytes] = []
    FeedCommands(FEED, 10).append_publish_xadd(out, b"1-1", b"over tls")
    writer.send_parts(out, 2)
    await writer.flush()
    assert await writer.execute("XLEN", FEED) == 1
    await writer.aclose()
    # Without the CA the server's certificate is not trusted.
    untrusted = RedisConfig(url=config.url)
    with pytest.raises(RedisUnavailableError, match="cannot reach"):
        await PipelineWriter.open(untrusted)
    assert server.ping()


async def test_client_kill_is_detected_as_connection_lost(
    redis_url: str, plain: aioredis.Redis
) -> None:
    writer = await PipelineWriter.open(RedisConfig(url=redis_url))
    client_id = await writer.execute("CLIENT", "ID")
    await plain.execute_command("CLIENT", "KILL", "ID", client_id)
    await wait_until(lambda: not writer.is_connected, what="the writer to see the kill")
    with pytest.raises(ConnectionLostError) as caught:
        writer.send(pack_command("PING"))
    assert isinstance(caught.value, redis.exceptions.ConnectionError)
    with pytest.raises(ConnectionLostError):
        await writer.flush()


async def test_server_kill_fails_pending_work_with_unconfirmed_count(
    make_redis_server: Callable[..., RedisProcess],
) -> None:
    server = make_redis_server()
    writer = await PipelineWriter.open(RedisConfig(url=server.url))
    await writer.execute("CLIENT", "PAUSE", "5000", "ALL")  # replies stop coming
    for _ in range(10):
        writer.send(pack_command("PING"))
    await writer.drain()
    server.kill()
    with pytest.raises(ConnectionLostError) as caught:
        await writer.flush()
    assert caught.value.unconfirmed == 10


async def test_silent_server_hits_the_reply_deadline(
    make_redis_server: Callable[..., RedisProcess],
) -> None:
    server = make_redis_server()
    writer = await PipelineWriter.open(RedisConfig(url=server.url), reply_timeout_s=0.2)
    await writer.execute("CLIENT", "PAUSE", "10000", "ALL")
    writer.send(pack_command("PING"))
    with pytest.raises(ReplyTimeoutError, match="did not answer"):
        await writer.flush()
    assert not writer.is_connected


async def test_drain_bounds_replies_in_flight(redis_url: str) -> None:
    writer = await PipelineWriter.open(
        RedisConfig(url=redis_url), max_pending_replies=64, write_chunk_bytes=512
    )
    command = pack_command("PUBLISH", "c", b"x" * 100)
    high = 0
    for _ in range(2_000):
        writer.send(command)
        await writer.drain()
        high = max(high, writer.pending_replies)
    assert high <= 65
    await writer.flush()
    assert writer.pending_replies == 0
    await writer.aclose()


async def test_flow_control_pauses_on_a_full_socket(
    make_redis_server: Callable[..., RedisProcess],
) -> None:
    """A stopped server reads nothing: the socket fills, drain blocks, then resumes."""
    server = make_redis_server()
    writer = await PipelineWriter.open(
        RedisConfig(url=server.url), reply_timeout_s=5, write_chunk_bytes=1
    )
    sock = writer.socket_transport.get_extra_info("socket") if writer.socket_transport else None
    assert sock is not None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)
    resume = asyncio.get_running_loop().call_later(0.3, server.proc.send_signal, signal.SIGCONT)
    try:
        big = pack_command("PUBLISH", "c", b"y" * 60_000)
        pauses = 0
        for _ in range(200):
            writer.send(big)  # handed to the transport at once (write_chunk_bytes=1)
            pauses += writer.write_paused
            await writer.drain()  # returns only once the transport resumed writing
            assert not writer.write_paused
        assert pauses > 0
        await writer.flush()
    finally:
        resume.cancel()
        server.proc.send_signal(signal.SIGCONT)
    await writer.aclose()
