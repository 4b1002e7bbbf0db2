"""Contract sizes: venues print derivative amounts in contracts, the truth stays base."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.sim.contracts import UNIT, ContractSpec, amount_step_lots, contract_spec
from marketbus.sim.market import SyntheticMarket
from marketbus.sim.protocols.kucoinfutures import BULLET_TOKEN, WS_PATH, KucoinFuturesVenue
from marketbus.sim.protocols.okx import OkxVenue
from marketbus.sim.venue import RestRequest, WsSession

T0 = 1_699_999_980_000
SWAP = "BTC/USDT:USDT"


def _market(*, unit_contracts: bool = False) -> SyntheticMarket:
    return SyntheticMarket(
        [SWAP, "ETH/USDT:USDT", "BTC/USDT"], seed=5, start_ms=T0, unit_contracts=unit_contracts
    )


def _base(contracts: object, size: Decimal) -> Decimal:
    return Decimal(str(contracts)) * size


def _amount(value: float, decimals: int) -> Decimal:
    return Decimal(f"{value:.{decimals}f}")


def test_real_contract_sizes_of_btc_swaps() -> None:
    assert contract_spec("okx", "BTC") == ContractSpec(Decimal("0.01"), Decimal("0.01"))
    assert contract_spec("kucoinfutures", "BTC") == ContractSpec(Decimal("0.001"), Decimal(1))
    assert contract_spec("binance", "BTC") == UNIT
    assert contract_spec("bingx", "BTC") == UNIT


def test_whole_contracts_refuse_a_fraction() -> None:
    spec = contract_spec("kucoinfutures", "BTC")
    assert spec.contracts("0.0120") == "12"
    with pytest.raises(ValueError, match="not a multiple"):
        spec.contracts("0.0125")


@given(st.sampled_from(["BTC", "ETH", "SOL", "XRP", "DOGE", "BNB", "ZZZ"]), st.integers(1, 999))
def test_any_multiple_of_the_step_is_exact_on_every_venue(base: str, steps: int) -> None:
    decimals = {"BTC": 4, "ETH": 4, "SOL": 3, "BNB": 3, "XRP": 1, "DOGE": 0}.get(base, 2)
    lots = steps * amount_step_lots(base, decimals)
    amount = f"{Decimal(lots).scaleb(-decimals):.{decimals}f}"
    for exchange in ("okx", "kucoinfutures", "binance", "bingx"):
        spec = contract_spec(exchange, base)
        assert spec.to_base(spec.contracts(amount)) == Decimal(amount)


def test_swap_truth_is_whole_multiples_of_the_step_and_unit_contracts_restores_one_lot() -> None:
    market = _market()
    inst = market.instrument(SWAP)
    assert inst.amount_step_lots == 10  # kucoin's 0.001 BTC in lots of 0.0001
    for i in range(1, 100):
        market.step(SWAP, T0 + i)
    for trade in market.trades(SWAP):
        assert round(trade.amount * 10**4) % 10 == 0
    book = market.book(SWAP)
    assert all(round(a * 10**4) % 10 == 0 for _, a in (*book.bids, *book.asks))
    unit = _market(unit_contracts=True).instrument(SWAP)
    assert unit.amount_step_lots == 1 and unit.contract("okx") == UNIT
    assert market.instrument("BTC/USDT").contract("okx") == UNIT


def _okx_session(venue: OkxVenue, business: bool, channels: list[str]) -> WsSession:
    path = "/okx/ws/v5/business" if business else "/okx/ws/v5/public"
    session = venue.open_session(path, {})
    assert session is not None
    args = [{"channel": c, "instId": "BTC-USDT-SWAP"} for c in channels]
    session.received(json.dumps({"op": "subscribe", "args": args}), T0, accept=True)
    return session


def _frames(sessions: list[WsSession], market: SyntheticMarket, now: int) -> list[Any]:
    events = market.step(SWAP, now)
    return [json.loads(f) for e in events for s in sessions for f in s.render(e)]


def test_okx_swap_frames_carry_contracts_that_convert_back_to_the_truth() -> None:
    market = _market()
    venue = OkxVenue(market, lambda: T0)
    [info] = [r for r in venue.rest_routes() if r.path.endswith("/public/instruments")]
    listed = info.handler(RestRequest({"instType": "SWAP"}, "ws://x")).body["data"]
    btc = next(i for i in listed if i["instId"] == "BTC-USDT-SWAP")
    assert (btc["ctVal"], btc["ctType"], btc["lotSz"]) == ("0.01", "linear", "0.01")
    size = Decimal(btc["ctVal"])
    public = _okx_session(venue, False, ["trades", "tickers", "books"])
    business = _okx_session(venue, True, ["candle1m"])
    seen = set()
    for i in range(1, 50):
        for frame in _frames([public, business], market, T0 + i):
            channel = frame["arg"]["channel"]
            [data] = frame["data"]
            seen.add(channel)
            if channel == "trades":
                trade = market.trades(SWAP)[-1]
                assert data["tradeId"] == str(trade.id)
                assert _base(data["sz"], size) == _amount(trade.amount, 4)
                assert Decimal(data["sz"]) != _amount(trade.amount, 4)  # contracts, not base
            elif channel == "tickers":
                ticker = market.ticker(SWAP)
                assert _base(data["vol24h"], size) == _amount(ticker.base_volume, 4)
                assert Decimal(data["volCcy24h"]) == _amount(ticker.base_volume, 4)
                assert _base(data["bidSz"], size) == _amount(ticker.bid_size, 4)
            elif channel == "books":
                book = market.book(SWAP)
                for sent, levels in ((data["bids"], book.bids), (data["asks"], book.asks)):
                    truth = {_amount(p, 2): _amount(a, 4) for p, a in levels}
                    for price, amount, *_ in sent:
                        assert _base(amount, size) == truth.get(Decimal(price), Decimal(0))
            elif channel == "candle1m":
                row = data
                candle = market.candles(SWAP, "1m")[-1]
                assert _base(row[5], size) == _amount(candle.volume, 4)  # vol: contracts
                assert Decimal(row[6]) == _amount(candle.volume, 4)  # volCcy: base
    assert seen == {"trades", "tickers", "books", "candle1m"}


def test_kucoin_frames_carry_whole_contracts_that_convert_back_to_the_truth() -> None:
    market = _market()
    venue = KucoinFuturesVenue(market, lambda: T0)
    [route] = [r for r in venue.rest_routes() if r.path.endswith("/contracts/active")]
    listed = route.handler(RestRequest({}, "ws://x")).body["data"]
    assert (listed[0]["multiplier"], listed[0]["lotSize"], listed[0]["isInverse"]) == (
        0.001,
        1,
        False,
    )
    size = Decimal(str(listed[0]["multiplier"]))
    session = venue.open_session(WS_PATH, {"token": BULLET_TOKEN, "connectId": "c"})
    assert session is not None
    for topic in ("execution", "level2", "ticker", "limitCandle"):
        arg = "XBTUSDTM_1min" if topic == "limitCandle" else "XBTUSDTM"
        request = {"id": "1", "type": "subscribe", "topic": f"/contractMarket/{topic}:{arg}"}
        session.received(json.dumps(request), T0, accept=True)
    subjects = set()
    for i in range(1, 50):
        for frame in _frames([session], market, T0 + i):
            data, subject = frame["data"], frame["subject"]
            subjects.add(subject)
            if subject == "match":
                assert isinstance(data["size"], int)
                trade = market.trades(SWAP)[-1]
                assert _base(data["size"], size) == _amount(trade.amount, 4)
            elif subject == "level2":
                amount = data["change"].rsplit(",", 1)[1]
                assert amount.isdigit()
            elif subject == "ticker":
                assert _base(data["bestAskSize"], size) == _amount(market.ticker(SWAP).ask_size, 4)
            elif subject == "candle.stick":
                candle = market.candles(SWAP, "1m")[-1]
                assert data["candles"][5].isdigit()
                assert _base(data["candles"][6], size) == _amount(candle.volume, 4)
    assert subjects == {"match", "level2", "ticker", "candle.stick"}
    [snapshot] = [r for r in venue.rest_routes() if r.path.endswith("/level2/snapshot")]
    body = snapshot.handler(RestRequest({"symbol": "XBTUSDTM"}, "ws://x")).body["data"]
    book = market.book(SWAP)
    assert [_base(a, size) for _, a in body["bids"]] == [_amount(a, 4) for _, a in book.bids]
