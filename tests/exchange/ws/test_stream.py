"""The stream consumer (``/ws/stream/``) through ``WebsocketCommunicator``: every message
type, book sync and gap recovery, auth failures, limits, heartbeats, cancel-on-disconnect,
private-stream isolation and the monitoring rows."""

import asyncio
import json
import re
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.utils import timezone
from rest_framework.test import APIClient

from exchange import consumers
from exchange.matcher.market import MarketMatcher
from exchange.matcher.publish import book_key, decimal_plain, outbox_build, publish, snapshot
from exchange.models import CommandKind, OrderCommand, WebSocketConnection
from exchange.services.sessions import api_key_revoke
from tests.exchange.ws.conftest import (
    api_key,
    closed_with,
    connect,
    delta,
    group_send,
    public_send,
    public_send_now,
    request,
    session_token,
)
from tests.factories import AccountFactory, AssetFactory, MarketFactory, place_order
from tests.portfolio import sim
from tests.trades import trade_at

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal


def run(coroutine_function):
    return async_to_sync(coroutine_function)()


async def nothing_more(communicator) -> None:
    assert await communicator.receive_nothing(timeout=0.2)


# --- public streams ----------------------------------------------------------------------


def test_ping_is_answered_with_pong_and_server_time():
    async def scenario():
        ws = await connect()
        reply = await request(ws, {"type": "ping", "id": "p1"})
        await ws.disconnect()
        return reply

    reply = run(scenario)
    assert reply["type"] == "pong"
    assert reply["id"] == "p1"
    assert reply["server_time"].endswith("+00:00")


def test_book_subscription_sends_the_snapshot_then_chained_deltas(market, book):
    book(5, bids=[["99.00", "1.000"]], asks=[["101.00", "2.000"]])

    async def scenario():
        ws = await connect()
        subscribed = await request(
            ws, {"type": "subscribe", "id": 1, "channels": [f"book.{market.symbol}"]}
        )
        first = await ws.receive_json_from()
        await public_send(delta(market.symbol, 6, 7, bids=[["99.00", "0"]]))
        second = await ws.receive_json_from()
        # An expiry-only batch changes levels without using a sequence: it still chains.
        await public_send(delta(market.symbol, 8, 7, asks=[["101.00", "0"]]))
        third = await ws.receive_json_from()
        await public_send(delta(market.symbol, 8, 8, asks=[["102.00", "1.000"]]))
        fourth = await ws.receive_json_from()
        await nothing_more(ws)
        await ws.disconnect()
        return subscribed, first, [second, third, fourth]

    subscribed, first, deltas = run(scenario)
    assert subscribed == {"type": "subscribed", "id": 1, "channels": [f"book.{market.symbol}"]}
    assert first == {
        "type": "book.snapshot",
        "symbol": market.symbol,
        "sequence": 5,
        "bids": [["99.00", "1.000"]],
        "asks": [["101.00", "2.000"]],
        "resync": False,
    }
    assert [(d["type"], d["first_sequence"], d["sequence"]) for d in deltas] == [
        ("book.delta", 6, 7),
        ("book.delta", 8, 7),
        ("book.delta", 8, 8),
    ]
    assert deltas[0]["bids"] == [["99.00", "0"]]
    assert deltas[2]["asks"] == [["102.00", "1.000"]]


def test_deltas_published_while_the_snapshot_is_read_are_held_and_those_it_has_dropped(
    market, book, monkeypatch
):
    """The race: the subscriber joins the market's hub, then reads the snapshot; deltas
    the matcher publishes meanwhile are held. The one the snapshot includes is
    dropped, the next one is sent after the snapshot."""
    book(10, bids=[["99.00", "1.000"]])
    read = consumers.published_book

    def slow_read(ref):
        public_send_now(delta(market.symbol, 9, 10, bids=[["99.00", "1.000"]]))
        snap = read(ref)
        public_send_now(delta(market.symbol, 11, 12, bids=[["98.00", "3.000"]]))
        time.sleep(0.2)  # both reach the consumer before the read returns
        return snap

    monkeypatch.setattr(consumers, "published_book", slow_read)

    async def scenario():
        ws = await connect()
        await request(ws, {"type": "subscribe", "channels": [f"book.{market.symbol}"]})
        snap = await ws.receive_json_from()
        after = await ws.receive_json_from()
        await nothing_more(ws)
        await ws.disconnect()
        return snap, after

    snap, after = run(scenario)
    assert (snap["type"], snap["sequence"]) == ("book.snapshot", 10)
    assert (after["type"], after["first_sequence"], after["sequence"]) == ("book.delta", 11, 12)


def test_a_delta_merged_across_the_snapshot_is_sent_from_the_snapshot_on(market, book):
    """The hub merged batches 3-5 and 6-8 into one delta; the subscriber's snapshot is at
    5. Its levels are their sizes after 8, so from 5 on it chains: sent as 6-8."""
    book(5, bids=[["99.00", "1.000"]])

    async def scenario():
        ws = await connect()
        await request(ws, {"type": "subscribe", "channels": [f"book.{market.symbol}"]})
        await ws.receive_json_from()  # snapshot 5
        merged = delta(market.symbol, 3, 8, bids=[["99.00", "0"], ["98.00", "2.000"]])
        await public_send(merged)
        got = await ws.receive_json_from()
        await public_send(delta(market.symbol, 9, 9, asks=[["101.00", "1.000"]]))
        after = await ws.receive_json_from()
        await nothing_more(ws)
        await ws.disconnect()
        return got, after

    got, after = run(scenario)
    assert got == delta(market.symbol, 6, 8, bids=[["99.00", "0"], ["98.00", "2.000"]])
    assert (after["first_sequence"], after["sequence"]) == (9, 9)


def test_a_gap_in_the_deltas_makes_the_server_resync_with_a_fresh_snapshot(market, book):
    book(5)

    async def scenario():
        ws = await connect()
        await request(ws, {"type": "subscribe", "channels": [f"book.{market.symbol}"]})
        await ws.receive_json_from()  # snapshot 5
        await public_send(delta(market.symbol, 6, 6))
        received = [await ws.receive_json_from()]
        await public_send(delta(market.symbol, 4, 5))  # old: dropped
        # 7 and 8 were lost (a full channel drops messages); the matcher is at 10 now.
        await database_sync_to_async(book)(10, bids=[["97.00", "5.000"]])
        await public_send(delta(market.symbol, 9, 10))
        received.append(await ws.receive_json_from())
        await public_send(delta(market.symbol, 11, 11))
        received.append(await ws.receive_json_from())
        await nothing_more(ws)
        await ws.disconnect()
        return received

    chained, resync, next_delta = run(scenario)
    assert (chained["type"], chained["sequence"]) == ("book.delta", 6)
    assert resync == {
        "type": "book.snapshot",
        "symbol": market.symbol,
        "sequence": 10,
        "bids": [["97.00", "5.000"]],
        "asks": [],
        "resync": True,
    }
    assert (next_delta["first_sequence"], next_delta["sequence"]) == (11, 11)


def test_subscribing_again_to_a_book_is_the_client_side_resync(market, book):
    book(3)

    async def scenario():
        ws = await connect()
        channel = f"book.{market.symbol}"
        await request(ws, {"type": "subscribe", "channels": [channel]})
        first = await ws.receive_json_from()
        await database_sync_to_async(book)(8)
        await request(ws, {"type": "subscribe", "channels": [channel]})
        second = await ws.receive_json_from()
        await ws.disconnect()
        return first, second

    first, second = run(scenario)
    assert (first["sequence"], second["sequence"]) == (3, 8)


def test_without_a_published_book_the_snapshot_is_the_open_orders_at_the_journal_sequence(
    market, buyer, seller
):
    place_order(buyer, market, "BUY", "1", "99")
    place_order(buyer, market, "BUY", "2", "99")
    place_order(seller, market, "SELL", "1.5", "101")
    matcher = MarketMatcher(market)
    matcher.run_batch()
    expected = snapshot(matcher)
    from dex.redis import redis_client

    redis_client().delete(book_key(market.symbol))

    async def scenario():
        ws = await connect()
        await request(ws, {"type": "subscribe", "channels": [f"book.{market.symbol}"]})
        snap = await ws.receive_json_from()
        await ws.disconnect()
        return snap

    snap = run(scenario)

    def numbers(levels):
        return [[D(p), D(q)] for p, q in levels]

    assert snap["sequence"] == expected["sequence"] == 3
    assert numbers(snap["bids"]) == numbers(expected["bids"]) == [[D(99), D(3)]]
    assert numbers(snap["asks"]) == numbers(expected["asks"]) == [[D(101), D("1.5")]]


def test_trades_reach_trade_subscribers_only(market, book):
    book(1)
    trade = {"id": 1, "sequence": 1, "price": "100", "quantity": "1", "side": "BUY", "time": "t"}

    async def scenario():
        trades_ws = await connect()
        book_ws = await connect()
        await request(trades_ws, {"type": "subscribe", "channels": [f"trades.{market.symbol}"]})
        await request(book_ws, {"type": "subscribe", "channels": [f"book.{market.symbol}"]})
        await book_ws.receive_json_from()  # snapshot
        await public_send({"type": "trades", "symbol": market.symbol, "trades": [trade]})
        await public_send(delta(market.symbol, 2, 2))
        got = await trades_ws.receive_json_from()
        book_got = await book_ws.receive_json_from()
        await nothing_more(trades_ws)
        await nothing_more(book_ws)
        await trades_ws.disconnect()
        await book_ws.disconnect()
        return got, book_got

    got, book_got = run(scenario)
    assert got == {"type": "trades", "symbol": market.symbol, "trades": [trade]}
    assert book_got["type"] == "book.delta"


def test_ticker_and_candle_channels_send_current_values(market, buyer, seller, settings):
    settings.WS_TICKER_INTERVAL = settings.WS_CANDLE_INTERVAL = 0.05
    place_order(seller, market, "SELL", "2", "100")
    place_order(buyer, market, "BUY", "0.5", "100")
    place_order(buyer, market, "BUY", "1", "101")
    MarketMatcher(market).run_batch()

    async def scenario():
        ws = await connect()
        channels = [f"ticker.{market.symbol}", f"candles.{market.symbol}.1m"]
        await request(ws, {"type": "subscribe", "channels": channels})
        got = {}
        while len(got) < 2:
            message = await ws.receive_json_from()
            got[message["type"]] = message
        await ws.disconnect()
        return got

    got = run(scenario)
    ticker, candle = got["ticker"], got["candle"]
    assert ticker["symbol"] == market.symbol
    assert D(ticker["last_price"]) == 100
    assert D(ticker["volume"]) == D("1.5")
    assert ticker["trade_count"] == 2
    assert D(ticker["best_ask"]) == 100
    assert (candle["interval"], D(candle["close"]), candle["trade_count"]) == ("1m", 100, 2)
    assert D(candle["volume"]) == D("1.5")


def test_unsubscribed_channels_stop(market, book):
    book(1)

    async def scenario():
        ws = await connect()
        channels = [f"book.{market.symbol}", f"trades.{market.symbol}"]
        await request(ws, {"type": "subscribe", "channels": channels})
        await ws.receive_json_from()
        reply = await request(
            ws, {"type": "unsubscribe", "id": 2, "channels": [*channels, "book.NOT-THERE"]}
        )
        await public_send(delta(market.symbol, 2, 2))
        await nothing_more(ws)
        await ws.disconnect()
        return reply

    assert run(scenario) == {
        "type": "unsubscribed",
        "id": 2,
        "channels": [f"book.{market.symbol}", f"trades.{market.symbol}"],
    }


# --- refusals: close codes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code", "close"),
    [
        ("not json", "BAD_MESSAGE", 4400),
        ("[1, 2]", "BAD_MESSAGE", 4400),
        ('{"type": "dance"}', "UNKNOWN_MESSAGE", 4400),
        ('{"type": "subscribe", "channels": "book.ETH-USDC"}', "BAD_MESSAGE", 4400),
        ('{"type": "subscribe", "channels": []}', "BAD_MESSAGE", 4400),
        ('{"type": "subscribe", "channels": ["orders.ETH-USDC"]}', "UNKNOWN_CHANNEL", 4404),
        ('{"type": "subscribe", "channels": ["book.eth-usdc"]}', "UNKNOWN_CHANNEL", 4404),
        ('{"type": "subscribe", "channels": ["book.BTC-USDC"]}', "UNKNOWN_CHANNEL", 4404),
        ('{"type": "subscribe", "channels": ["candles.ETH-USDC.7m"]}', "UNKNOWN_CHANNEL", 4404),
        ('{"type": "subscribe", "channels": ["account"]}', "AUTH_REQUIRED", 4403),
        ('{"type": "cancel_on_disconnect", "markets": []}', "AUTH_REQUIRED", 4403),
        ('{"type": "auth"}', "AUTH_FAILED", 4401),
        ('{"type": "auth", "token": "nope"}', "AUTH_FAILED", 4401),
        ('{"type": "auth", "api_key": "abc.def"}', "AUTH_FAILED", 4401),
        ('{"type": "ping", "pad": "' + "x" * 5000 + '"}', "BAD_MESSAGE", 4400),
    ],
)
def test_bad_messages_are_refused_with_an_error_and_a_close_code(market, frame, code, close):
    async def scenario():
        ws = await connect()
        await ws.send_to(text_data=frame)
        return await closed_with(ws)

    error, close_code = run(scenario)
    assert (error["type"], error["code"], close_code) == ("error", code, close)


def test_binary_frames_are_refused():
    async def scenario():
        ws = await connect()
        await ws.send_to(bytes_data=b"\x00\x01")
        return await closed_with(ws)

    error, close_code = run(scenario)
    assert (error["code"], close_code) == ("BAD_MESSAGE", 4400)


@pytest.mark.parametrize(
    "headers",
    [
        [("authorization", "Bearer not-a-session")],
        [("authorization", "Bearer")],
        [("x-api-key", "nodot")],
        [("x-api-key", "0011223344556677.wrong")],
    ],
)
def test_bad_credentials_in_the_handshake_close_with_4401(headers):
    async def scenario():
        ws = await connect(headers)
        return await closed_with(ws)

    error, close_code = run(scenario)
    assert (error["code"], close_code) == ("AUTH_FAILED", 4401)


def test_a_revoked_api_key_is_refused(trader):
    secret = api_key(trader)
    key = trader.api_keys.get()
    api_key_revoke(account=trader, key=key)

    async def scenario():
        ws = await connect()
        await ws.send_json_to({"type": "auth", "api_key": secret})
        return await closed_with(ws)

    error, close_code = run(scenario)
    assert (error["code"], error["message"], close_code) == (
        "AUTH_FAILED",
        "this API key was revoked",
        4401,
    )


def test_scopes_gate_the_account_channel_and_cancel_on_disconnect(trader, market):
    trade_only = api_key(trader, scopes=["trade"])
    read_only = api_key(trader, scopes=["read"])

    async def attempt(secret, message):
        ws = await connect([("x-api-key", secret)])
        await ws.send_json_to(message)
        return await closed_with(ws)

    account = {"type": "subscribe", "channels": ["account"]}
    dead_man = {"type": "cancel_on_disconnect", "markets": [market.symbol]}
    assert async_to_sync(attempt)(trade_only, account)[0]["code"] == "FORBIDDEN"
    error, close_code = async_to_sync(attempt)(read_only, dead_man)
    assert (error["code"], close_code) == ("FORBIDDEN", 4403)


def test_too_many_subscriptions_close_with_4429(market, book, settings):
    settings.WS_MAX_SUBSCRIPTIONS = 2
    book(1)

    async def scenario():
        ws = await connect()
        await request(ws, {"type": "subscribe", "channels": [f"trades.{market.symbol}"]})
        # The same channel again does not count twice.
        await request(ws, {"type": "subscribe", "channels": [f"trades.{market.symbol}"]})
        await request(ws, {"type": "subscribe", "channels": [f"book.{market.symbol}"]})
        await ws.receive_json_from()  # snapshot
        await ws.send_json_to({"type": "subscribe", "channels": [f"ticker.{market.symbol}"]})
        return await closed_with(ws)

    error, close_code = run(scenario)
    assert (error["code"], close_code) == ("TOO_MANY_SUBSCRIPTIONS", 4429)


def test_more_messages_per_second_than_allowed_close_with_4429(settings):
    settings.WS_MAX_MESSAGES_PER_SECOND = 5

    async def scenario():
        ws = await connect()
        for n in range(8):
            await ws.send_json_to({"type": "ping", "id": n})
        pongs = [await ws.receive_json_from() for _ in range(5)]
        return pongs, await closed_with(ws)

    pongs, (error, close_code) = run(scenario)
    assert [p["id"] for p in pongs] == [0, 1, 2, 3, 4]
    assert (error["code"], close_code) == ("RATE_LIMITED", 4429)


def test_a_client_that_stops_reading_is_disconnected_not_buffered(
    market, book, settings, monkeypatch
):
    """Nothing the client is sent leaves the server (its socket's buffers are full): the
    queue reaches its limit and the server closes with 4509."""
    settings.WS_SEND_QUEUE_LIMIT = 5
    book(1)

    async def stuck_writer(self):
        await asyncio.Event().wait()

    monkeypatch.setattr(consumers.StreamConsumer, "_write", stuck_writer)
    snapshot_sent = []  # the client sees nothing: this says when the deltas will count
    send_snapshot = consumers.StreamConsumer._send_snapshot

    async def sending_snapshot(self, market, *, resync):
        await send_snapshot(self, market, resync=resync)
        snapshot_sent[0].set()

    monkeypatch.setattr(consumers.StreamConsumer, "_send_snapshot", sending_snapshot)

    async def scenario():
        snapshot_sent.append(asyncio.Event())
        ws = await connect()
        await ws.send_json_to({"type": "subscribe", "channels": [f"book.{market.symbol}"]})
        await asyncio.wait_for(snapshot_sent[0].wait(), 5)
        for n in range(2, 12):
            await public_send(delta(market.symbol, n, n))
            await asyncio.sleep(0.05)  # handed on alone, not merged with the next
        close = await ws.receive_output(timeout=5)
        await ws.disconnect(code=close["code"])
        return close

    assert run(scenario) == {"type": "websocket.close", "code": 4509}
    row = WebSocketConnection.objects.get()
    assert row.close_code == 4509
    assert row.messages_sent == 0


def test_a_silent_client_is_closed_with_4408(settings):
    settings.WS_IDLE_TIMEOUT = 0.3

    async def scenario():
        ws = await connect()
        return await closed_with(ws)

    error, close_code = run(scenario)
    assert (error["code"], close_code) == ("HEARTBEAT_TIMEOUT", 4408)


# --- the private stream --------------------------------------------------------------------


def test_session_token_in_the_auth_message_and_api_key_in_the_header_authenticate(trader):
    token = session_token(trader)
    secret = api_key(trader, scopes=["read"])

    async def scenario():
        by_message = await connect()
        reply = await request(by_message, {"type": "auth", "id": 3, "token": token})
        by_header = await connect([("x-api-key", secret)])
        subscribed = await request(by_header, {"type": "subscribe", "channels": ["account"]})
        balances = await by_header.receive_json_from()
        by_bearer = await connect([("authorization", f"Bearer {token}")])
        bearer_subscribed = await request(by_bearer, {"type": "subscribe", "channels": ["account"]})
        for ws in (by_message, by_header, by_bearer):
            await ws.disconnect()
        return reply, subscribed, balances, bearer_subscribed

    reply, subscribed, balances, bearer_subscribed = run(scenario)
    assert reply == {
        "type": "authenticated",
        "id": 3,
        "account": trader.pk,
        "scopes": ["read", "trade", "withdraw"],
    }
    assert subscribed["type"] == bearer_subscribed["type"] == "subscribed"
    assert balances == {"type": "account.balances", "balances": []}


def test_each_trader_receives_only_their_own_orders_and_balances(market, buyer, seller):
    """A and B trade with each other in one matcher batch: each private stream carries
    that trader's orders and balances and nothing of the other's."""
    buyer_token, seller_token = session_token(buyer), session_token(seller)
    matcher = MarketMatcher(market)

    async def scenario():
        a = await connect([("authorization", f"Bearer {buyer_token}")])
        b = await connect([("authorization", f"Bearer {seller_token}")])
        for ws in (a, b):
            await request(ws, {"type": "subscribe", "channels": ["account"]})
            await ws.receive_json_from()  # balances now

        def trade():
            ask = place_order(seller, market, "SELL", "2", "100")
            bid = place_order(buyer, market, "BUY", "1", "100")
            publish(matcher, matcher.run_batch())
            return ask.pk, bid.pk

        ask_id, bid_id = await database_sync_to_async(trade)()
        got = {}
        for name, ws in (("a", a), ("b", b)):
            got[name] = [await ws.receive_json_from(), await ws.receive_json_from()]
            await nothing_more(ws)
            await ws.disconnect()
        return got, ask_id, bid_id

    got, ask_id, bid_id = run(scenario)
    a_orders, a_balances = got["a"]
    b_orders, b_balances = got["b"]
    assert a_orders["type"] == b_orders["type"] == "account.orders"
    assert [(o["id"], o["status"]) for o in a_orders["orders"]] == [(bid_id, "FILLED")]
    assert [(o["id"], o["status"]) for o in b_orders["orders"]] == [(ask_id, "PARTIALLY_FILLED")]
    a_money = {b["asset"]: b for b in a_balances["balances"]}
    b_money = {b["asset"]: b for b in b_balances["balances"]}
    assert D(a_money["ETH"]["available"]) == 1
    assert D(b_money["ETH"]["held"]) == 1  # the rest of the ask
    assert D(b_money["USDC"]["available"]) > 0
    assert a_balances["type"] == b_balances["type"] == "account.balances"


def test_account_events_of_other_traders_never_reach_a_private_stream(trader, other_trader):
    token = session_token(trader)

    async def scenario():
        ws = await connect([("authorization", f"Bearer {token}")])
        await request(ws, {"type": "subscribe", "channels": ["account"]})
        await ws.receive_json_from()
        await group_send(
            f"account.{other_trader.pk}", {"type": "account.orders", "orders": [{"id": 1}]}
        )
        await nothing_more(ws)
        await group_send(f"account.{trader.pk}", {"type": "account.orders", "orders": [{"id": 2}]})
        mine = await ws.receive_json_from()
        await ws.disconnect()
        return mine

    assert run(scenario) == {"type": "account.orders", "orders": [{"id": 2}]}


# --- cancel on disconnect ----------------------------------------------------------------------


def _cancel_alls(account, market) -> int:
    return OrderCommand.objects.filter(
        kind=CommandKind.CANCEL_ALL, account=account, market=market
    ).count()


def test_cancel_on_disconnect_cancels_when_the_connection_drops(trader, market):
    token = session_token(trader)

    async def scenario():
        ws = await connect([("authorization", f"Bearer {token}")])
        reply = await request(
            ws, {"type": "cancel_on_disconnect", "id": 9, "markets": [market.symbol]}
        )
        before = await database_sync_to_async(_cancel_alls)(trader, market)
        await ws.disconnect()
        return reply, before

    reply, before = run(scenario)
    assert reply == {
        "type": "cancel_on_disconnect",
        "id": 9,
        "markets": [market.symbol],
        "heartbeat_timeout": None,
    }
    assert (before, _cancel_alls(trader, market)) == (0, 1)


def test_cancel_on_disconnect_can_be_disarmed(trader, market):
    token = session_token(trader)

    async def scenario():
        ws = await connect([("authorization", f"Bearer {token}")])
        await request(ws, {"type": "cancel_on_disconnect", "markets": [market.symbol]})
        await request(ws, {"type": "cancel_on_disconnect", "markets": []})
        await ws.disconnect()

    run(scenario)
    assert _cancel_alls(trader, market) == 0


def test_cancel_on_disconnect_fires_when_pings_stop_and_not_while_they_come(
    trader, market, settings
):
    settings.WS_DEAD_MAN_MIN_TIMEOUT = 0.1
    token = session_token(trader)

    async def scenario():
        ws = await connect([("authorization", f"Bearer {token}")])
        await request(
            ws,
            {"type": "cancel_on_disconnect", "markets": [market.symbol], "heartbeat_timeout": 0.4},
        )
        for _ in range(6):  # 0.6 s of pings every 0.1 s
            await asyncio.sleep(0.1)
            await request(ws, {"type": "ping"})
        alive = await database_sync_to_async(_cancel_alls)(trader, market)
        error, close_code = await closed_with(ws)
        return alive, error, close_code

    alive, error, close_code = run(scenario)
    assert alive == 0
    assert (error["code"], close_code) == ("HEARTBEAT_TIMEOUT", 4408)
    assert _cancel_alls(trader, market) == 1  # once: not again on the disconnect


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"markets": "ETH-USDC"}, 4400),
        ({"markets": ["ETH-USDC"], "heartbeat_timeout": 0}, 4400),
        ({"markets": ["ETH-USDC"], "heartbeat_timeout": "5"}, 4400),
        ({"markets": ["ETH-USDC"], "heartbeat_timeout": True}, 4400),
        ({"markets": ["NOPE-USDC"]}, 4404),
    ],
)
def test_bad_cancel_on_disconnect_requests_are_refused(trader, market, message, code):
    token = session_token(trader)

    async def scenario():
        ws = await connect([("authorization", f"Bearer {token}")])
        await ws.send_json_to({"type": "cancel_on_disconnect", **message})
        return await closed_with(ws)

    error, close_code = run(scenario)
    assert (error["type"], close_code) == ("error", code)
    assert _cancel_alls(trader, market) == 0


# --- monitoring rows ---------------------------------------------------------------------------


def test_a_connection_row_records_who_what_and_how_much_without_a_write_per_message(
    trader, market, book, settings
):
    settings.WS_MAX_MESSAGES_PER_SECOND = 100
    book(1)
    token = session_token(trader)

    async def scenario():
        ws = await connect(
            [("authorization", f"Bearer {token}"), ("user-agent", "bot/1.0")],
            client=("198.51.100.4", 4321),
        )
        await request(ws, {"type": "subscribe", "channels": [f"book.{market.symbol}", "account"]})
        for _ in range(2):
            await ws.receive_json_from()  # snapshot, balances
        for n in range(20):
            await request(ws, {"type": "ping", "id": n})
        row = await database_sync_to_async(WebSocketConnection.objects.get)()
        during = (row.messages_received, row.messages_sent, row.subscriptions, row.account_id)
        await ws.disconnect(code=1000)
        return during

    during = run(scenario)
    assert during == (0, 0, [], trader.pk)  # nothing written per message
    row = WebSocketConnection.objects.get()
    assert row.account_id == trader.pk
    assert row.client_address == "198.51.100.4"
    assert row.user_agent == "bot/1.0"
    assert row.subscriptions == ["account", f"book.{market.symbol}"]
    assert (row.messages_received, row.messages_sent) == (21, 23)
    assert row.disconnected_at >= row.connected_at
    assert row.close_code == 1000


def test_an_open_connection_row_is_brought_up_to_date_periodically(settings):
    settings.WS_CONNECTION_FLUSH_SECONDS = 0.1

    async def scenario():
        ws = await connect()
        await request(ws, {"type": "ping"})
        await asyncio.sleep(0.5)
        row = await database_sync_to_async(WebSocketConnection.objects.get)()
        await ws.disconnect()
        return row

    row = run(scenario)
    assert (row.messages_received, row.messages_sent, row.disconnected_at) == (1, 1, None)
    assert row.last_seen_at > row.connected_at


def test_a_removed_level_is_published_with_size_exactly_zero():
    from decimal import Decimal

    from exchange.matcher.publish import _level_size

    assert _level_size(Decimal("0E-8")) == "0"
    assert _level_size(Decimal("0")) == "0"
    assert _level_size(Decimal("1.50000000")) == "1.50000000"


# --- decimal strings -------------------------------------------------------------------

EXPONENT = re.compile(r"-?\d+(?:\.\d+)?[eE][-+]?\d+")  # "0E-8", "5.0E-7"
IDENTIFIERS = {"client_order_id", "order_hash"}  # strings that may look like "19e24"


def _in_exponent_form(value) -> list[str]:
    """Every decimal string of a message written in exponent form."""
    if isinstance(value, dict):
        return [
            text
            for key, item in value.items()
            if key not in IDENTIFIERS
            for text in _in_exponent_form(item)
        ]
    if isinstance(value, list):
        return [text for item in value for text in _in_exponent_form(item)]
    return [value] if isinstance(value, str) and EXPONENT.fullmatch(value) else []


@pytest.fixture
def tiny_market(db):
    """A token worth a fraction of a millionth of its quote: tick 1e-8, lot 1."""
    return MarketFactory(
        base=AssetFactory(symbol="SHIB"),
        quote=AssetFactory(symbol="WETH"),
        tick_size=D("0.00000001"),
        lot_size=D("1"),
        min_quantity=D("1"),
        min_notional=D("0"),
    )


def _rest(path: str) -> dict | list:
    return APIClient().get(f"/api/v1/markets/{path}").json()


@pytest.mark.parametrize(
    ("market_fixture", "trades"),
    [
        # No trade in the window: zero volumes, which PostgreSQL returns as 0E-8.
        ("market", [("100", "1", timedelta(hours=30))]),
        # Prices below 0.000001, unchanged over the window: a zero change.
        (
            "tiny_market",
            [
                ("0.00000050", "1000", timedelta(hours=2)),
                ("0.00000050", "3000", timedelta(seconds=1)),
            ],
        ),
    ],
)
def test_the_ticker_message_writes_decimals_as_the_rest_ticker_does(
    request, market_fixture, trades
):
    market = request.getfixturevalue(market_fixture)
    now = timezone.now()
    for price, quantity, ago in trades:
        trade_at(market, price, quantity, now - ago)

    message = consumers.ticker_message(consumers.MarketRef(market.pk, market.symbol))
    rest = _rest(f"{market.symbol}/ticker/")

    fields = ("last_price", "open", "high", "low", "change", "change_percent", "volume")
    assert {f: message[f] for f in (*fields, "quote_volume")} == {
        f: rest[f] for f in (*fields, "quote_volume")
    }
    assert _in_exponent_form(message) == [], message


def test_the_candle_message_writes_sub_micro_prices_as_the_rest_candles_do(tiny_market):
    trade_at(tiny_market, "0.00000050", "1000", timezone.now())

    message = consumers.candle_message(
        consumers.MarketRef(tiny_market.pk, tiny_market.symbol), "1m"
    )
    rest = _rest(f"{tiny_market.symbol}/candles/?interval=1m")[-1]

    fields = ("open", "high", "low", "close", "volume", "quote_volume")
    assert {f: message[f] for f in fields} == {f: rest[f] for f in fields}
    assert message["open"] == "0.00000050"


def test_the_matcher_publishes_sub_micro_prices_and_zero_amounts_in_plain_form(tiny_market):
    """Book snapshot, book.delta, trades, account.orders and account.balances of a market
    whose prices are below 0.000001 (where str() of a Decimal turns to exponent form)."""
    seller, buyer = AccountFactory(kyc_tier=1), AccountFactory(kyc_tier=1)
    sim.deposit(seller, tiny_market.base, "10000")
    sim.deposit(buyer, tiny_market.quote, "1")
    place_order(seller, tiny_market, "SELL", "1000", "0.00000050")
    place_order(buyer, tiny_market, "BUY", "400", "0.00000050")
    place_order(buyer, tiny_market, "BUY", "100", "0.00000049")
    matcher = MarketMatcher(tiny_market)

    outbox = outbox_build(matcher, matcher.run_batch())
    balances = consumers.balances_message(seller)  # nothing held in WETH: a zero

    messages = {m["type"]: m for m in map(json.loads, outbox.public)}
    book = json.loads(outbox.snapshot)
    orders = [o for _, m in outbox.messages for o in m["orders"]]
    assert [p for p, _ in book["asks"]] == [p for p, _ in messages["book.delta"]["asks"]]
    assert [p for p, _ in book["asks"]] == ["0.00000050"]
    assert [p for p, _ in book["bids"]] == ["0.00000049"]
    assert [t["price"] for t in messages["trades"]["trades"]] == ["0.00000050"]
    assert {o["price"] for o in orders} == {"0.00000050", "0.00000049"}
    for message in (*map(json.loads, outbox.public), book, orders, balances):
        assert _in_exponent_form(message) == [], message


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (D("0E-8"), "0.00000000"),
        (50 * D("0.00000001"), "0.00000050"),
        (D("123.45000000"), "123.45000000"),
        (D("1E+2"), "100"),
        (D("-0.00000001"), "-0.00000001"),
    ],
)
def test_websocket_decimals_are_written_in_fixed_point_form(value, text):
    assert decimal_plain(value) == text == format(value, "f")
