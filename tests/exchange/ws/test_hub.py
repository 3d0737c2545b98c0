"""Public market data through the process's hub (``exchange.streams_hub``): one Redis
pub/sub subscription per market however many sockets, one decode per message and no
encoding per socket, order kept, a resync after the subscription is lost, and the hub
gone with its last subscriber; and the matcher's side, one publish per message in batch
order."""

import asyncio
import json
import os
import time
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from prometheus_client import REGISTRY

from dex.redis import redis_client
from exchange import consumers, streams_hub
from exchange.matcher.market import MarketMatcher
from exchange.matcher.publish import Publisher, book_key, encode, outbox_build, public_channel
from tests.exchange.ws.conftest import connect, delta, public_send, request
from tests.factories import place_order

pytestmark = pytest.mark.django_db(transaction=True)


def run(coroutine_function):
    return async_to_sync(coroutine_function)()


def numsub(symbol: str) -> int:
    channel = public_channel(symbol)
    return dict(redis_client().pubsub_numsub(channel)).get(channel.encode(), 0)


async def subscribed(symbol: str, count: int, *, trades: bool = False):
    """``count`` sockets subscribed to the book (and trades), each past its snapshot."""
    sockets = []
    channels = [f"book.{symbol}"] + ([f"trades.{symbol}"] if trades else [])
    for _ in range(count):
        ws = await connect()
        await request(ws, {"type": "subscribe", "channels": channels})
        snap = await ws.receive_json_from()
        assert snap["type"] == "book.snapshot"
        sockets.append(ws)
    return sockets


def coalesced_total() -> float:
    return REGISTRY.get_sample_value("dex_ws_deltas_coalesced_total") or 0.0


def trades_message(symbol: str, n: int) -> dict:
    trade = {"id": n, "sequence": n, "price": "100", "quantity": "1", "side": "BUY", "time": "t"}
    return {"type": "trades", "symbol": symbol, "trades": [trade]}


def test_one_pubsub_subscription_per_market_however_many_sockets(market, book):
    book(1)

    async def scenario():
        sockets = await subscribed(market.symbol, 6, trades=True)
        hubs = streams_hub.hubs()
        state = (list(hubs), len(hubs[market.symbol].subscribers), numsub(market.symbol))
        await public_send(delta(market.symbol, 2, 2))
        got = [await ws.receive_json_from() for ws in sockets]
        for ws in sockets:
            await ws.disconnect()
        return state, got

    (symbols, subscribers, in_redis), got = run(scenario)
    assert (symbols, subscribers, in_redis) == ([market.symbol], 6, 1)
    assert [(m["type"], m["sequence"]) for m in got] == [("book.delta", 2)] * 6


def test_each_message_is_decoded_once_for_the_process_and_sent_as_published(
    market, book, monkeypatch
):
    book(1)
    decoded, encoded = [], []
    decode = streams_hub.decode

    def counting_decode(data):
        decoded.append(data)
        return decode(data)

    class CountingJson:
        loads = staticmethod(json.loads)

        @staticmethod
        def dumps(*args, **kwargs):
            encoded.append(args[0])
            return json.dumps(*args, **kwargs)

    monkeypatch.setattr(streams_hub, "decode", counting_decode)
    monkeypatch.setattr(consumers, "json", CountingJson)
    messages = [
        delta(market.symbol, 2, 3, bids=[["99.00", "1.000"]]),
        trades_message(market.symbol, 1),
        delta(market.symbol, 4, 4, asks=[["101.00", "0"]]),
    ]

    async def scenario():
        sockets = await subscribed(market.symbol, 4, trades=True)
        decoded.clear()
        encoded.clear()
        got = [[] for _ in sockets]
        for message in messages:
            await public_send(message)
            for ws, received in zip(sockets, got, strict=True):
                received.append(await ws.receive_from())  # each before the next is sent
        counts = len(decoded), list(encoded)
        for ws in sockets:
            await ws.disconnect()
        return counts, got

    (decodes, encodes), got = run(scenario)
    assert decodes == len(messages)
    assert encodes == []  # no json.dumps per socket
    assert got == [[encode(m) for m in messages]] * 4


def test_messages_published_one_at_a_time_reach_every_socket_as_published(market, book):
    book(1)
    messages = []
    for n in range(2, 12):
        messages.append(delta(market.symbol, n, n, bids=[["99.00", f"{n}.000"]]))
        messages.append(trades_message(market.symbol, n))

    async def scenario():
        sockets = await subscribed(market.symbol, 3, trades=True)
        got = [[] for _ in sockets]
        for message in messages:
            await public_send(message)
            for ws, received in zip(sockets, got, strict=True):
                received.append(await ws.receive_from())  # each before the next is sent
        for ws in sockets:
            await ws.disconnect()
        return got

    assert run(scenario) == [[encode(m) for m in messages]] * 3


def test_a_burst_read_in_one_go_reaches_every_socket_as_one_delta_and_one_trades(market, book):
    """The event loop busy while 40 batches are published: the hub reads them together
    and hands them on as one delta for sequences 2-41, each level at its last size, then
    the batch that only expired orders after 41 as a delta of its own (merged into the
    run, the run would end at 41, and a snapshot at 41 read before that expiry would
    have it dropped), then the 40 batches' trades in order."""
    book(1)
    messages = []
    for n in range(2, 42):
        messages.append(delta(market.symbol, n, n, bids=[["99.00", f"{n}.000"]]))
        if n % 2:
            messages.append(delta(market.symbol, n + 1, n, asks=[[f"{100 + n}.00", "0"]]))
        messages.append(trades_message(market.symbol, n))

    async def scenario():
        sockets = await subscribed(market.symbol, 3, trades=True)
        before = coalesced_total()
        pipe = redis_client().pipeline(transaction=False)
        for message in messages:
            pipe.publish(public_channel(market.symbol), encode(message))
        pipe.execute()
        time.sleep(0.3)  # the loop is busy: everything is in the hub's connection
        got = [[await ws.receive_json_from() for _ in range(3)] for ws in sockets]
        rest = [await ws.receive_nothing(timeout=0.3) for ws in sockets]
        for ws in sockets:
            await ws.disconnect()
        return got, rest, coalesced_total() - before

    got, rest, coalesced = run(scenario)
    expected_asks = [[f"{100 + n}.00", "0"] for n in range(3, 41, 2)]
    for merged, expired, trades in got:
        assert merged == {
            "type": "book.delta",
            "symbol": market.symbol,
            "first_sequence": 2,
            "sequence": 41,
            "bids": [["99.00", "41.000"]],
            "asks": expected_asks,
        }
        assert expired == delta(market.symbol, 42, 41, asks=[["141.00", "0"]])
        assert trades["type"] == "trades"
        assert [t["id"] for t in trades["trades"]] == list(range(2, 42))
    assert rest == [True] * 3
    assert coalesced == len(messages) - 3


def test_a_lost_pubsub_connection_is_made_again_and_every_subscriber_resyncs(market, book):
    """Messages published while the hub is not subscribed are lost to it: when it has
    subscribed again, each of its book subscribers is sent a fresh snapshot."""
    book(5, bids=[["99.00", "1.000"]])

    async def scenario():
        sockets = await subscribed(market.symbol, 3)
        hub = streams_hub.hubs()[market.symbol]
        name = f"dex-hub-{os.getpid()}-{id(hub):x}"
        [client] = [c for c in redis_client().client_list() if c["name"] == name]
        # The matcher moves on while the connection is gone: 6-7 is never heard.
        redis_client().client_kill_filter(_id=client["id"])
        await public_send(delta(market.symbol, 6, 7, bids=[["99.00", "0"]]))
        await asyncio.to_thread(book, 7, bids=[["98.00", "2.000"]])
        resynced = [await ws.receive_json_from(timeout=10) for ws in sockets]
        await public_send(delta(market.symbol, 8, 8, asks=[["101.00", "1.000"]]))
        after = [await ws.receive_json_from() for ws in sockets]
        state = hub.subscriptions, numsub(market.symbol)
        for ws in sockets:
            await ws.disconnect()
        return resynced, after, state

    resynced, after, (subscriptions, in_redis) = run(scenario)
    assert subscriptions == 2
    assert in_redis == 1
    for snap in resynced:
        assert snap == {
            "type": "book.snapshot",
            "symbol": market.symbol,
            "sequence": 7,
            "bids": [["98.00", "2.000"]],
            "asks": [],
            "resync": True,
        }
    assert [(m["type"], m["first_sequence"]) for m in after] == [("book.delta", 8)] * 3


def test_the_last_socket_to_leave_stops_the_hub_and_its_subscription(market, book):
    book(1)

    async def gone(symbol: str) -> bool:
        for _ in range(100):
            if numsub(symbol) == 0:
                return True
            await asyncio.sleep(0.02)
        return False

    async def scenario():
        first, second = await subscribed(market.symbol, 2, trades=True)
        hub = streams_hub.hubs()[market.symbol]
        channels = [f"book.{market.symbol}", f"trades.{market.symbol}"]
        await request(first, {"type": "unsubscribe", "channels": channels[:1]})
        one_channel_left = len(hub.subscribers)  # trades still wants the hub
        await request(first, {"type": "unsubscribe", "channels": channels[1:]})
        one_socket_left = len(hub.subscribers), numsub(market.symbol)
        await second.disconnect()
        await asyncio.sleep(0.05)
        stopped = (
            market.symbol not in streams_hub.hubs(),
            hub.task.done(),
            await gone(market.symbol),
        )
        # A new subscriber starts it again.
        [third] = await subscribed(market.symbol, 1)
        await public_send(delta(market.symbol, 2, 2))
        again = await third.receive_json_from()
        await first.disconnect()
        await third.disconnect()
        await asyncio.sleep(0.05)
        return one_channel_left, one_socket_left, stopped, again, streams_hub.hubs()

    one_channel_left, one_socket_left, stopped, again, hubs = run(scenario)
    assert one_channel_left == 2
    assert one_socket_left == (1, 1)
    assert stopped == (True, True, True)
    assert (again["type"], again["sequence"]) == ("book.delta", 2)
    assert hubs == {}


def test_the_matcher_publishes_each_public_message_once_in_batch_order(market, buyer, seller):
    pubsub = redis_client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(public_channel(market.symbol))
    matcher = MarketMatcher(market)
    publisher = Publisher()
    try:
        place_order(seller, market, "SELL", "2", "100")
        publisher.submit(outbox_build(matcher, matcher.run_batch()))
        place_order(buyer, market, "BUY", "1", "100")
        publisher.submit(outbox_build(matcher, matcher.run_batch()))
        place_order(buyer, market, "BUY", "1", "99")
        publisher.submit(outbox_build(matcher, matcher.run_batch()))
        received = []
        deadline = time.monotonic() + 5
        while len(received) < 4 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message is not None:
                received.append(json.loads(message["data"]))
        assert pubsub.get_message(timeout=0.3) is None  # nothing twice
    finally:
        publisher.stop()
        pubsub.close()
        redis_client().delete(book_key(market.symbol))
    assert [(m["type"], m.get("first_sequence"), m.get("sequence")) for m in received] == [
        ("book.delta", 1, 1),
        ("book.delta", 2, 2),
        ("trades", None, None),
        ("book.delta", 3, 3),
    ]
    assert Decimal(received[2]["trades"][0]["quantity"]) == 1
