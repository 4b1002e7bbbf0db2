"""A real producer (real ccxt.pro, real redis-server) against the loopback simulator."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import redis.asyncio as aioredis

from marketbus.producer import Producer
from marketbus.shared.codecs import decode, decode_feed_info
from marketbus.shared.errors import ConfigError, RedisUnavailableError
from marketbus.shared.schema import OHLCV, Status, Ticker
from marketbus.sim import SimServer
from tests.integration.producer.conftest import SYMBOLS, producer_config
from tests.support.waiting import wait_until

OHLCV_FEED = "md:binance:ohlcv.1s:BTC/USDT"


async def _stream(redis: aioredis.Redis, key: str) -> list[tuple[bytes, bytes]]:
    found: list[tuple[bytes, bytes]] = []
    for entry_id, fields in await redis.xrange(key) or []:
        payload = (fields or {}).get(b"d")
        assert isinstance(entry_id, bytes) and isinstance(payload, bytes)
        found.append((entry_id, payload))
    return found


async def _closed_live_candles(redis: aioredis.Redis, run: int) -> int:
    entries = await _stream(redis, OHLCV_FEED)
    return sum(1 for entry_id, _ in entries if entry_id.startswith(f"{run}-".encode()))


async def _closed_candle_stamps(redis: aioredis.Redis, run: int) -> list[int]:
    """Open times of the closed candles this run wrote to the stream."""
    entries = await _stream(redis, OHLCV_FEED)
    prefix = f"{run}-".encode()
    return [decode(p).ts_ms or 0 for entry_id, p in entries if entry_id.startswith(prefix)]


def _first_forming(payloads: list[bytes]) -> int | None:
    """Open time of the first forming candle among published *payloads* (the socket's)."""
    for payload in payloads:
        message = decode(payload)
        if isinstance(message, OHLCV) and not message.closed:
            return message.ts_ms
    return None


async def test_streams_hold_closed_candles_equal_to_the_sim_and_the_published_bytes(
    redis_url: str, binance_sim: SimServer
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.psubscribe("md:binance:*")
    confirmed = await pubsub.get_message(timeout=5)
    assert confirmed is not None and confirmed["type"] == "psubscribe"
    published: dict[str, list[bytes]] = {}

    async def collect() -> None:
        async for item in pubsub.listen():
            if item["type"] == "pmessage":
                published.setdefault(item["channel"].decode(), []).append(item["data"])

    collector = asyncio.create_task(collect())
    try:
        async with Producer(producer_config(redis_url, binance_sim)) as producer:
            run = producer.run_id

            async def a_dozen_three_closed_live() -> bool:
                # The start-up backfill alone may hold a dozen closed candles (the
                # simulator's 10 s of history plus however long the start took): wait
                # for candles the socket delivered forming and the producer then closed.
                forming = _first_forming(published.get(OHLCV_FEED, []))
                if forming is None:
                    return False
                stamps = await _closed_candle_stamps(redis, run)
                return len(stamps) >= 12 and sum(ts >= forming for ts in stamps) >= 3

            await wait_until(
                a_dozen_three_closed_live,
                timeout_s=30,
                poll_s=0.05,
                what="a dozen closed candles, three of them closed live",
            )
        sim_candles = {c.ts_ms: c for c in binance_sim.market.candles("BTC/USDT", "1s") if c.closed}
        entries = await _stream(redis, OHLCV_FEED)
        by_ts: dict[int, OHLCV] = {}
        for entry_id, payload in entries:
            message = decode(payload)
            assert isinstance(message, OHLCV) and message.closed
            assert entry_id == f"{message.run}-{message.seq}".encode()
            assert message.run == run
            by_ts[message.ts_ms or 0] = message
        stamps = sorted(by_ts)
        assert stamps == list(range(stamps[0], stamps[-1] + 1000, 1000)), "hole in candles"
        for ts, message in by_ts.items():
            candle = sim_candles[ts]
            got = (message.open, message.high, message.low, message.close, message.volume)
            assert got == (candle.open, candle.high, candle.low, candle.close, candle.volume)
        # Entry payloads are byte-for-byte what was published on the channel.
        await wait_until(
            lambda: {p for _, p in entries} <= set(published.get(OHLCV_FEED, [])),
            what="every stream payload seen on the channel",
        )
        # The channel carries forming updates too, with seq +1 per message.
        channel = [decode(p) for p in published[OHLCV_FEED]]
        seqs = [m.seq for m in channel]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert any(isinstance(m, OHLCV) and not m.closed for m in channel)
        # Ticker streams, catalog and status.
        for symbol in SYMBOLS:
            tickers = await _stream(redis, f"md:binance:ticker:{symbol}")
            assert tickers and all(isinstance(decode(p), Ticker) for _, p in tickers)
        catalog = {
            (k.decode() if isinstance(k, bytes) else k): decode_feed_info(
                v if isinstance(v, bytes) else v.encode()
            )
            for k, v in (await redis.hgetall("md:feeds")).items()
        }
        assert set(catalog) == {
            f"md:binance:{kind}:{s}" for kind in ("ohlcv.1s", "ticker") for s in SYMBOLS
        }
        assert catalog[OHLCV_FEED].timeframe == "1s" and catalog[OHLCV_FEED].run == run
        events = [decode(p) for _, p in await _stream(redis, "md:binance:status")]
        kinds = [e.event for e in events if isinstance(e, Status)]
        assert kinds[0] == "started" and "connected" in kinds and kinds[-1] == "stopped"
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()


async def test_restart_continues_with_a_larger_run_without_holes_or_going_back(
    redis_url: str, binance_sim: SimServer
) -> None:
    config = producer_config(redis_url, binance_sim, kinds=["ohlcv.1s"])
    redis = aioredis.Redis.from_url(redis_url)
    try:
        runs = []
        for _ in range(2):
            async with Producer(config) as producer:
                run = producer.run_id
                runs.append(run)

                async def two_live(run: int = run) -> bool:
                    return await _closed_live_candles(redis, run) >= 2

                await wait_until(two_live, timeout_s=10, what="live closed candles")
        assert runs[1] > runs[0]
        entries = await _stream(redis, OHLCV_FEED)
        ids = [tuple(int(x) for x in entry_id.split(b"-")) for entry_id, _ in entries]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        stamps = sorted({decode(p).ts_ms or 0 for _, p in entries})  # corrections re-send
        assert stamps == list(range(stamps[0], stamps[0] + 1000 * len(stamps), 1000))
        status_ids = [entry_id for entry_id, _ in await _stream(redis, "md:binance:status")]
        assert status_ids == sorted(status_ids, key=lambda i: tuple(map(int, i.split(b"-"))))
    finally:
        await redis.aclose()


async def test_unknown_symbol_is_skipped_unless_strict(
    redis_url: str, binance_sim: SimServer
) -> None:
    lenient = producer_config(redis_url, binance_sim, symbols=["BTC/USDT", "NOPE/USDT"])
    async with Producer(lenient) as producer:
        assert {f.symbol for f in producer.feeds} == {"BTC/USDT"}
    strict = msgspec.structs.replace(
        lenient, exchanges=[msgspec.structs.replace(lenient.exchanges[0], strict=True)]
    )
    with pytest.raises(ConfigError, match="NOPE/USDT"):
        await Producer(strict).start()


async def test_unsupported_timeframe_and_unknown_exchange_are_config_errors(
    redis_url: str, binance_sim: SimServer
) -> None:
    config = producer_config(redis_url, binance_sim, kinds=["ohlcv.7m"])
    with pytest.raises(ConfigError, match="7m"):
        await Producer(config).start()
    bogus = msgspec.structs.replace(
        config, exchanges=[msgspec.structs.replace(config.exchanges[0], id="nosuchexchange")]
    )
    with pytest.raises(ConfigError, match="nosuchexchange"):
        await Producer(bogus).start()


async def test_unreachable_redis_is_a_clear_error(binance_sim: SimServer) -> None:
    config = producer_config("redis://127.0.0.1:1/0", binance_sim)
    with pytest.raises(RedisUnavailableError, match="cannot reach Redis"):
        await Producer(config).start()
