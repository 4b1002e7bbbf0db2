"""`check_books`: the okx checksum and kucoin sequence hooks on real ccxt.pro exchange
objects, fed frames by hand (no sockets): a good frame reaches ccxt, a broken one makes
ccxt drop the book the way it does itself and rejects the pending watch."""

from __future__ import annotations

from typing import Any

import ccxt.pro

from marketbus.producer.watch import BookResyncError, check_books
from marketbus.sim.faults import corrupt_book_event
from marketbus.sim.market import BookEvent, BookSnapshot, SyntheticMarket
from marketbus.sim.protocols import okx as okx_sim


class FakeClient:
    """What ccxt's book handlers use of a websocket client."""

    def __init__(self, subscriptions: dict[str, Any]) -> None:
        self.subscriptions = subscriptions
        self.resolved: list[str] = []
        self.rejected: list[tuple[str, BaseException]] = []

    def resolve(self, result: Any, message_hash: str) -> Any:
        self.resolved.append(message_hash)
        return result

    def reject(self, error: BaseException, message_hash: str) -> BaseException:
        self.rejected.append((message_hash, error))
        return error


def _kucoin_delta(sequence: int) -> dict[str, Any]:
    return {
        "type": "message",
        "topic": "/contractMarket/level2:XBTUSDTM",
        "subject": "level2",
        "data": {"sequence": sequence, "change": "100,buy,5", "timestamp": 1_700_000_000_000},
    }


def test_kucoin_delta_after_a_hole_resets_ccxts_book_and_rejects_the_watch() -> None:
    exchange = ccxt.pro.kucoinfutures()
    check_books(exchange)
    book = exchange.order_book()
    book["nonce"] = 10
    exchange.orderbooks["XBTUSDTM"] = book
    client = FakeClient({})
    exchange.handle_order_book(client, _kucoin_delta(11))
    assert (book["nonce"], client.resolved, client.rejected) == (11, ["orderbook:XBTUSDTM"], [])
    gap = _kucoin_delta(13)
    exchange.handle_order_book(client, gap)
    [(message_hash, error)] = client.rejected
    assert message_hash == "orderbook:XBTUSDTM" and isinstance(error, BookResyncError)
    assert "13 after 11" in str(error)
    assert book["nonce"] is None and book.cache == [gap["data"]]  # ccxt will fetch a snapshot


def _okx_frame(action: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "arg": {"channel": "books", "instId": "BTC-USDT-SWAP"},
        "action": action,
        "data": [data],
    }


def test_okx_push_whose_checksum_disagrees_makes_ccxt_resubscribe() -> None:
    exchange = ccxt.pro.okx()
    check_books(exchange)
    symbol = "BTC-USDT-SWAP"  # no markets loaded: ccxt uses the id
    message_hash = f"books:{symbol}"
    client = FakeClient({message_hash: {}})
    market = SyntheticMarket(["BTC/USDT:USDT"], seed=3, start_ms=1_000_000)
    inst = market.instrument("BTC/USDT:USDT")
    exchange.handle_order_book(
        client, _okx_frame("snapshot", okx_sim.book_data(inst, market.book(inst.symbol), None, -1))
    )
    events = [e for e in market.step(inst.symbol, 1_000_010) if isinstance(e, BookEvent)]
    assert events
    good = events[0]
    exchange.handle_order_book(client, _okx_frame("update", _update(inst, good)))
    assert client.resolved == [message_hash, message_hash] and client.rejected == []
    later = [e for e in market.step(inst.symbol, 1_000_020) if isinstance(e, BookEvent)]
    exchange.handle_order_book(
        client, _okx_frame("update", _update(inst, corrupt_book_event(later[0], inst)))
    )
    [(rejected_hash, error)] = client.rejected
    assert rejected_hash == message_hash and isinstance(error, BookResyncError)
    assert "checksum" in str(error)
    assert client.subscriptions[message_hash] == "resync"  # the next watch resubscribes
    assert symbol not in exchange.orderbooks


def _update(inst: Any, event: BookEvent) -> dict[str, Any]:
    delta = event.delta
    changes = BookSnapshot(delta.ts_ms, delta.last_update_id, delta.bids, delta.asks)
    return okx_sim.book_data(inst, event.book, changes, delta.prev_update_id)
