"""`Engine.on_live_batch` inlines the common case of the general per-message path; this
proves they agree, like tests/unit/producer/test_normalize_fast_path.py does for the
producer: over arbitrary traffic, applying it in batches ends exactly where applying it
one message at a time through the general path ends."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from marketbus.consumers.buffers import BookState, CandleBuffer, TickerState, TradeBuffer
from marketbus.consumers.engine import BufferSizes, Engine, Live
from marketbus.consumers.events import Gap, Staleness, Update
from marketbus.shared.codecs import encode
from marketbus.shared.schema import OHLCV, Book, Message, Ticker, Trade, Trades

TRADES = "md:binance:trades:BTC/USDT"
TICKER = "md:binance:ticker:BTC/USDT"
CANDLES = "md:binance:ohlcv.1m:BTC/USDT"
BOOK = "md:binance:book:BTC/USDT"
"""Not followed at first: a pattern covers it, so its first message makes it a feed."""
OTHER = "md:okx:trades:BTC/USDT"
"""Covered by nothing: ignored."""
FOLLOWED = (TRADES, TICKER, CANDLES)
CHANNELS = (*FOLLOWED, BOOK, OTHER)
M = 60_000


class Recorder:
    def __init__(self) -> None:
        self.updates: list[tuple[str, tuple[int, int], bool]] = []
        self.events: list[Gap | Staleness] = []

    def push(self, feed: str, message: Update, must: bool) -> None:
        self.updates.append((feed, message.position, must))

    def push_event(self, event: Gap | Staleness) -> None:
        self.events.append(event)

    def forget(self, feed: str) -> None:
        pass


def message_for(channel: str, run: int, seq: int, closed: bool, timed: bool) -> Message:
    common = dict(exchange="binance", symbol="BTC/USDT", run=run, seq=seq, recv_ns=0)
    if channel in (TRADES, OTHER):
        trade = Trade(id=str(seq), ts_ms=seq, price=float(seq), amount=1.0, side="buy")
        return Trades(**common, ts_ms=seq, trades=(trade,))
    if channel == TICKER:
        return Ticker(**common, ts_ms=seq, last=float(seq))
    if channel == BOOK:
        return Book(**common, ts_ms=seq, depth=1, bids=((float(seq), 1.0),), asks=())
    return OHLCV(
        **common,
        ts_ms=seq // 3 * M if timed else None,
        timeframe="1m",
        open=1.0,
        high=2.0,
        low=0.5,
        close=float(seq),
        volume=1.0,
        closed=closed,
    )


PAYLOAD_KINDS = ("message", "message", "message", "other type", "json", "msgpack", "empty")
STEPS = (1, 1, 1, 1, 1, 0, -1, 2, 4)
"""Seq steps per channel: mostly the next one, some duplicates, replays and jumps."""
item = st.tuples(
    st.sampled_from(CHANNELS),
    st.sampled_from(PAYLOAD_KINDS),
    st.sampled_from(STEPS),
    st.integers(0, 9),  # 0: a new producer run starts here
    st.booleans(),  # closed (candles)
    st.integers(0, 5),  # 0: a candle without a time
    st.booleans(),  # channel as bytes
)


def payload(channel: str, kind: str, run: int, seq: int, closed: bool, timed: bool) -> bytes:
    if kind == "json":
        return b'{"type": "trades", "garbage'
    if kind == "msgpack":
        return b"\xc1\x00"
    if kind == "empty":
        return b""
    if kind == "other type":
        other = TICKER if channel != TICKER else TRADES
        return encode(message_for(other, run, seq, closed, timed))
    return encode(message_for(channel, run, seq, closed, timed))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ready_engine(clock: Clock, *, inline: bool) -> tuple[Engine, Recorder]:
    engine, recorder = Engine(clock=clock), Recorder()
    engine.add_sink(recorder)
    engine.add_pattern("md:binance:*", BufferSizes(candles=4, trades=50))
    engine.follow(FOLLOWED, BufferSizes(candles=4, trades=50))
    for channel in (*FOLLOWED, "md:binance:status"):
        engine.on_subscribed(channel)
    for fetch in engine.take_fetches():
        engine.on_history(fetch, [], done=True, stream_first=None)
    if not inline:
        for name in FOLLOWED:
            engine.feeds[name].live_type = None  # never inline: every message is general
    return engine, recorder


def observed(engine: Engine, recorder: Recorder) -> tuple[object, ...]:
    """Everything observable: counters, each feed's position, sync state, content and
    health, what listeners got, and what the shell is asked for."""
    feeds = {}
    for name, state in sorted(engine.feeds.items()):
        buffer = state.buffer
        content: object = None
        if isinstance(buffer, CandleBuffer):
            content = buffer.rows()
        elif isinstance(buffer, TradeBuffer):
            content = buffer.trades()
        elif isinstance(buffer, TickerState | BookState):
            content = buffer.latest
        health = (state.health.last_data, state.health.stale)
        feeds[name] = (state.last, state.syncing, len(state.held), content, health)
    return (
        engine.stats,
        feeds,
        recorder.updates,
        recorder.events,
        engine.take_fetches(),
        engine.take_subscriptions(),
        engine.ignored,
    )


@given(
    st.lists(item, max_size=60),
    st.lists(st.integers(1, 10), min_size=1, max_size=8),
)
def test_batches_end_where_the_general_path_ends(
    script: list[tuple[str, str, int, int, bool, int, bool]], cuts: list[int]
) -> None:
    """Whatever arrives (in order, duplicates, gaps, new runs, wrong types, undecodable
    payloads, candles without a time, channels found by a pattern or ignored), in
    whatever batches, the inline path ends exactly where the general path ends."""
    live: list[Live] = []
    positions = dict.fromkeys(CHANNELS, (1, 0))
    for channel, kind, step, new_run, closed, timed, as_bytes in script:
        run, seq = positions[channel]
        run, seq = (run + 1, 1) if new_run == 0 else (run, max(1, seq + step))
        positions[channel] = (run, seq)
        name: str | bytes = channel.encode() if as_bytes else channel
        live.append((name, None, payload(channel, kind, run, seq, closed, timed > 0)))
    batches = []
    start = 0
    for cut in cuts * (len(live) // sum(cuts) + 1):
        batches.append(live[start : start + cut])
        start += cut
    clock = Clock()  # one time per batch: the inline path reads the clock once per batch
    fast, fast_recorder = ready_engine(clock, inline=True)
    general, general_recorder = ready_engine(clock, inline=False)
    for second, batch in enumerate(batches, start=1):
        clock.now = float(second)
        fast.on_live_batch(batch)
        for channel, _, data in batch:
            general.on_live(channel, data)
    assert observed(fast, fast_recorder) == observed(general, general_recorder)
