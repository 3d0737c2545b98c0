"""The stream over a real network: ``uvicorn`` serving ``dex.asgi`` and ``run_matcher``
matching, as processes, against the test database; clients are the ``websockets``
package. Clients that apply snapshot + deltas end with exactly the matcher's book after
thousands of random orders, whenever they joined; private streams carry only their own
trader's orders; a dropped connection cancels the orders it guarded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import threading
import time
from decimal import Decimal

import pytest
import websockets
from django.db import connection
from websockets.asyncio.client import connect

from exchange.matcher.market import MarketMatcher
from exchange.matcher.publish import snapshot
from exchange.models import Order, OrderStatus, WebSocketConnection
from exchange.services.orders import OrderRejected, order_cancel
from tests.exchange.test_matcher_process import owns, pending, redis_snapshot
from tests.exchange.ws.conftest import api_key, session_token
from tests.factories import AccountFactory, place_order
from tests.live import wait_for, web_server
from tests.portfolio import sim

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal
ORDERS = int(os.environ.get("WS_TEST_ORDERS", 3000))


@pytest.fixture
def server(tmp_path):
    """``uvicorn dex.asgi:application`` on a free port, against the test database."""
    with web_server(tmp_path, WS_TICKER_INTERVAL="0.2") as port:
        yield f"ws://127.0.0.1:{port}/ws/stream/"


class Loop:
    """An event loop in a thread, for clients that live while the test places orders."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def start(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class BookClient:
    """What the README asks a client to do: apply the snapshot, then deltas whose
    ``first_sequence`` is the last ``sequence`` + 1; on anything else, subscribe again
    for a fresh snapshot."""

    def __init__(self, url: str, symbol: str) -> None:
        self.url = url
        self.symbol = symbol
        self.sides: dict[str, dict[Decimal, Decimal]] = {"bids": {}, "asks": {}}
        self.sequence: int | None = None
        self.snapshots = self.deltas = self.gaps = self.trades = 0
        self.stop = asyncio.Event()
        self.ready = threading.Event()

    async def run(self) -> None:
        async with connect(self.url) as ws:
            channel = f"book.{self.symbol}"
            await ws.send(
                json.dumps({"type": "subscribe", "channels": [channel, f"trades.{self.symbol}"]})
            )
            while not self.stop.is_set():
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                except TimeoutError:
                    await ws.send(json.dumps({"type": "ping"}))
                    continue
                kind = message["type"]
                if kind == "book.snapshot":
                    self.snapshots += 1
                    for side in ("bids", "asks"):
                        self.sides[side] = {D(p): D(q) for p, q in message[side]}
                    self.sequence = message["sequence"]
                    self.ready.set()
                elif kind == "book.delta":
                    if self.sequence is None or message["first_sequence"] != self.sequence + 1:
                        self.gaps += 1
                        self.sequence = None
                        await ws.send(json.dumps({"type": "subscribe", "channels": [channel]}))
                        continue
                    self.deltas += 1
                    for side in ("bids", "asks"):
                        for price, quantity in message[side]:
                            if D(quantity) == 0:
                                self.sides[side].pop(D(price), None)
                            else:
                                self.sides[side][D(price)] = D(quantity)
                    self.sequence = message["sequence"]
                elif kind == "trades":
                    self.trades += len(message["trades"])

    def book(self) -> tuple:
        bids = sorted(self.sides["bids"].items(), reverse=True)
        asks = sorted(self.sides["asks"].items())
        return self.sequence, [[p, q] for p, q in bids], [[p, q] for p, q in asks]


class AccountClient:
    """A private stream: every order id it is told about."""

    def __init__(self, url: str, headers: dict, auth: dict | None = None) -> None:
        self.url, self.headers, self.auth = url, headers, auth
        self.order_ids: set[int] = set()
        self.balances = 0
        self.stop = asyncio.Event()
        self.ready = threading.Event()

    async def run(self) -> None:
        async with connect(self.url, additional_headers=self.headers) as ws:
            if self.auth:
                await ws.send(json.dumps(self.auth))
                assert json.loads(await ws.recv())["type"] == "authenticated"
            await ws.send(json.dumps({"type": "subscribe", "channels": ["account"]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            self.ready.set()
            while not self.stop.is_set():
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                except TimeoutError:
                    await ws.send(json.dumps({"type": "ping"}))
                    continue
                if message["type"] == "account.orders":
                    self.order_ids.update(o["id"] for o in message["orders"])
                elif message["type"] == "account.balances":
                    self.balances += 1


def as_numbers(book: dict) -> tuple:
    return (
        book["sequence"],
        [[D(p), D(q)] for p, q in book["bids"]],
        [[D(p), D(q)] for p, q in book["asks"]],
    )


def _flow(market, trader, count: int, seed: int, placed: set, joins: list, errors: list) -> None:
    """One trader's random limit orders (GTC and IOC) around 100, and cancels of its
    recent ones; ``joins`` are callbacks run as the flow passes their share of ``count``."""
    rng = random.Random(seed)
    recent: list[Order] = []
    try:
        for n in range(count):
            while joins and n >= joins[0][0] * count:
                joins.pop(0)[1]()
            if recent and rng.random() < 0.15:
                with contextlib.suppress(OrderRejected):  # finished already
                    order_cancel(account=trader, order=rng.choice(recent))
                continue
            side = rng.choice(["BUY", "SELL"])
            price = D(100) + rng.randint(-40, 40) * D("0.01")
            quantity = rng.randint(100, 2000) * D("0.001")
            tif = "IOC" if rng.random() < 0.1 else "GTC"
            order = place_order(trader, market, side, quantity, price, time_in_force=tif)
            placed.add(order.pk)
            recent = [*recent[-30:], order]
    except Exception as exc:
        errors.append(exc)
        raise
    finally:
        connection.close()


def test_clients_applying_snapshot_and_deltas_hold_the_matchers_book(market, matchers, server):
    traders = AccountFactory.create_batch(4)
    for trader in traders:
        sim.deposit(trader, market.base, "100000")
        sim.deposit(trader, market.quote, "10000000")
    a, b = traders[0], traders[1]
    a_key, b_token = api_key(a, scopes=["read"]), session_token(b)

    proc = matchers.start()
    wait_for(lambda: owns(market, proc), 30, "the matcher", matchers)
    loop = Loop()
    books = [BookClient(server, market.symbol) for _ in range(3)]
    privates = [
        AccountClient(server, {"X-API-Key": a_key}),
        AccountClient(server, {}, auth={"type": "auth", "token": b_token}),
    ]
    futures = [loop.start(c.run()) for c in (books[0], *privates)]
    for client in (books[0], *privates):
        assert client.ready.wait(15), futures

    def join(client):
        def start():
            futures.append(loop.start(client.run()))
            assert client.ready.wait(15)

        return start

    placed: dict[int, set[int]] = {t.pk: set() for t in traders}
    errors: list[Exception] = []
    started = time.monotonic()
    try:
        flows = [
            threading.Thread(
                target=_flow,
                args=(market, trader, ORDERS // len(traders), seed, placed[trader.pk]),
                kwargs={
                    "joins": [(1 / 3, join(books[1])), (2 / 3, join(books[2]))]
                    if seed == 0
                    else [],
                    "errors": errors,
                },
            )
            for seed, trader in enumerate(traders)
        ]
        for flow in flows:
            flow.start()
        for flow in flows:
            flow.join(120)
        assert not errors, errors
        placing = time.monotonic() - started
        wait_for(lambda: not pending(market), 60, "the matcher to drain", matchers)
        final = redis_snapshot(market)
        wait_for(
            lambda: all(c.sequence == final["sequence"] for c in books),
            15,
            f"the clients to reach sequence {final['sequence']}: "
            + str([(c.sequence, c.snapshots, c.deltas, c.gaps) for c in books]),
        )
        time.sleep(0.3)  # anything late would show up now
    finally:
        for client in (*books, *privates):
            loop.loop.call_soon_threadsafe(client.stop.set)
        for future in futures:
            with contextlib.suppress(Exception):
                future.result(10)
        loop.stop()
    for future in futures:
        assert future.exception() is None, future.exception()

    print(
        f"{ORDERS} flow steps placed in {placing:.1f}s; sequence {final['sequence']}; "
        + "; ".join(
            f"client {i}: {c.snapshots} snapshot(s), {c.deltas} deltas, {c.gaps} gaps, "
            f"{c.trades} trades"
            for i, c in enumerate(books)
        )
    )
    published = as_numbers(final)
    rebuilt = as_numbers(snapshot(MarketMatcher(market)))
    assert published == rebuilt
    # A real book, and fewer levels than a snapshot carries (100): all of it is compared.
    # (How many levels the threads' interleaving leaves varies: one side had exactly 20.)
    assert 10 < len(published[1]) < 100
    assert 10 < len(published[2]) < 100
    for client in books:
        assert client.book() == published
        assert client.deltas > 100
    assert books[0].snapshots == 1  # joined at the start and never needed a resync
    assert final["sequence"] > ORDERS * 0.8

    # Private streams: all of their own trader's orders, nothing of anyone else's.
    for client, trader in zip(privates, (a, b), strict=True):
        assert client.order_ids == placed[trader.pk]
        assert client.balances > 0

    rows = WebSocketConnection.objects.all()
    wait_for(lambda: rows.filter(disconnected_at__isnull=True).count() == 0, 10, "closed rows")
    assert rows.count() == 5
    assert set(rows.exclude(account=None).values_list("account_id", flat=True)) == {a.pk, b.pk}
    assert all(row.messages_sent > 0 for row in rows)


def test_bad_credentials_close_with_4401_over_the_network(market, server):
    async def attempt():
        async with connect(server, additional_headers={"Authorization": "Bearer nope"}) as ws:
            error = json.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return error, closed.value.rcvd.code

    error, code = asyncio.run(attempt())
    assert (error["code"], code) == ("AUTH_FAILED", 4401)


def test_a_dropped_connection_cancels_the_orders_it_guarded(market, matchers, server):
    trader = AccountFactory()
    sim.deposit(trader, market.quote, "100000")
    proc = matchers.start()
    wait_for(lambda: owns(market, proc), 30, "the matcher", matchers)
    token = session_token(trader)
    orders = [place_order(trader, market, "BUY", "1", price) for price in ("99", "98", "97")]
    wait_for(lambda: not pending(market), 30, "the orders to rest", matchers)

    async def arm_and_drop():
        ws = await connect(server, additional_headers={"Authorization": f"Bearer {token}"})
        await ws.send(json.dumps({"type": "cancel_on_disconnect", "markets": [market.symbol]}))
        reply = json.loads(await ws.recv())
        ws.transport.abort()  # the network drops: no close handshake
        return reply

    reply = asyncio.run(arm_and_drop())
    assert reply["markets"] == [market.symbol]
    wait_for(
        lambda: (
            set(
                Order.objects.filter(pk__in=[o.pk for o in orders]).values_list("status", flat=True)
            )
            == {OrderStatus.CANCELLED}
        ),
        20,
        "the orders to be cancelled",
        matchers,
    )
