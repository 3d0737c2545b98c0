"""After a batch commits: tell the world.

- Redis ``dex:book:<symbol>``: the full book (top levels) with its sequence, for new
  subscribers and REST depth reads; ``dex:order-reply:<id>``: the order's state after
  matching, which the placing request may be waiting for (a list, so a reader that
  starts waiting late still finds it).
- Redis pub/sub channel ``public_channel(symbol)``, after the book write (one pipeline,
  in that order), the market's public messages as the WebSocket stream sends them, each
  encoded once here: ``book.delta``, the changed levels with the range of journal
  sequences they cover (``first_sequence`` … ``sequence``; a client whose
  ``first_sequence`` is not its last ``sequence`` + 1 has missed one and resyncs), then
  ``trades``, the batch's trades. Each web process receives them once per market and
  hands them to its sockets (``exchange.streams_hub``): the channel layer's groups copy
  every message to every consumer's channel.
- ``account.<id>`` channel-layer group, ``account.orders``: each trader's changed orders
  and fills.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from dex.metrics import MATCHER_COMMAND_LATENCY
from exchange.matcher.market import BatchResult, MarketMatcher
from exchange.models import Order, OrderCommand

log = logging.getLogger(__name__)
SNAPSHOT_LEVELS = 100
REPLY_TTL_SECONDS = 60

_redis: redis.Redis | None = None


def redis_client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(settings.REDIS_URL)
    return _redis


def book_key(symbol: str) -> str:
    return f"dex:book:{symbol}"


def public_channel(symbol: str) -> str:
    """The pub/sub channel of a market's public messages. Pub/sub ignores the database
    number, so the channel names it: platforms sharing one Redis server on different
    databases do not hear each other."""
    db = redis_client().connection_pool.connection_kwargs.get("db", 0)
    return f"dex:pub:{db}:market:{symbol}"


def encode(message: dict) -> str:
    """A message as the WebSocket stream sends it (compact JSON)."""
    return json.dumps(message, separators=(",", ":"))


def reply_key(order_id: int) -> str:
    return f"dex:order-reply:{order_id}"


def order_view(order: Order) -> dict:
    return {
        "id": order.pk,
        "client_order_id": order.client_order_id,
        "market": order.market.symbol,
        "side": order.side,
        "type": order.type,
        "status": order.status,
        "price": _s(order.price),
        "quantity": _s(order.quantity),
        "filled": _s(order.filled),
        "remaining": _s(order.remaining),
        "average_price": _s(order.average_price),
        "reason": order.reason,
    }


def decimal_plain(value: Decimal) -> str:
    """``value`` in fixed-point form, as the REST API writes it: every Decimal a
    WebSocket message carries goes through here. str() alone writes a NUMERIC zero as
    "0E-8" and a price below 0.000001 as "5.0E-7"; it is tried first because it is the
    plain form for nearly every value at half format()'s cost, and the matcher formats
    every level of its book after each batch."""
    text = str(value)
    return format(value, "f") if "E" in text else text


def _s(value: Decimal | None) -> str | None:
    return None if value is None else decimal_plain(value)


def snapshot(matcher: MarketMatcher) -> dict:
    units = matcher.units
    bids, asks = matcher.book.depth(SNAPSHOT_LEVELS)
    return {
        "symbol": matcher.market.symbol,
        "sequence": matcher.sequence,
        "bids": [
            [decimal_plain(units.ticks_to_price(p)), decimal_plain(units.lots_to_qty(q))]
            for p, q in bids
        ],
        "asks": [
            [decimal_plain(units.ticks_to_price(p)), decimal_plain(units.lots_to_qty(q))]
            for p, q in asks
        ],
    }


def publish_snapshot(matcher: MarketMatcher) -> None:
    """The whole book, for a matcher that has just (re)built it."""
    redis_client().set(book_key(matcher.market.symbol), json.dumps(snapshot(matcher)))


@dataclass
class Outbox:
    """What one committed batch publishes, built from the book as the batch left it."""

    symbol: str
    snapshot: str
    replies: list[tuple[str, str]]
    messages: list[tuple[str, dict]]  # (channel-layer group, message): private ones
    public: list[str] = field(default_factory=list)  # encoded, for public_channel(symbol)
    sequence: int = 0
    # The commands the batch applied and when it committed: their latency is observed,
    # and their request ids logged, from the publishing thread, off the matcher's.
    commands: list[OrderCommand] = field(default_factory=list)
    committed_at: float = 0.0


def _level_size(quantity) -> str:
    """A level's new size; a removed level's is exactly "0" (not "0E-8"), as clients
    are told to test for."""
    return "0" if not quantity else decimal_plain(quantity)


def publish(matcher: MarketMatcher, result: BatchResult) -> None:
    outbox_send(outbox_build(matcher, result))


def outbox_build(matcher: MarketMatcher, result: BatchResult) -> Outbox:
    """Everything a batch publishes; call right after its commit, before the next batch
    moves the book (the sending may then happen elsewhere: see ``Publisher``)."""
    committed_at = time.time()
    symbol = matcher.market.symbol
    levels = result.levels.items()
    public = [
        encode(
            {
                "type": "book.delta",
                "symbol": symbol,
                "first_sequence": result.first_sequence,
                "sequence": result.sequence,
                "bids": [
                    [decimal_plain(p), _level_size(q)] for (side, p), q in levels if side == "bids"
                ],
                "asks": [
                    [decimal_plain(p), _level_size(q)] for (side, p), q in levels if side == "asks"
                ],
            }
        )
    ]
    if result.trades:
        trades = [
            {
                "id": t.pk,
                "sequence": t.sequence,
                "price": decimal_plain(t.price),
                "quantity": decimal_plain(t.quantity),
                "side": t.aggressor_side,
                "time": t.executed_at.isoformat(),
            }
            for t in result.trades
        ]
        public.append(encode({"type": "trades", "symbol": symbol, "trades": trades}))
    per_account: dict[int, list[dict]] = defaultdict(list)
    replies = []
    for order in result.orders:
        view = order_view(order)
        per_account[order.account_id].append(view)
        replies.append((reply_key(order.pk), json.dumps(view)))
    messages = [
        (f"account.{account_id}", {"type": "account.orders", "orders": orders})
        for account_id, orders in per_account.items()
    ]
    return Outbox(
        symbol,
        json.dumps(snapshot(matcher)),
        replies,
        messages,
        public,
        sequence=result.sequence,
        commands=result.applied,
        committed_at=committed_at,
    )


def outbox_send(outbox: Outbox, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Send ``outbox``; on ``loop`` when given (the channel layer keeps its Redis
    connections per event loop: a loop kept for the process reuses them).

    One pipeline, executed in order on one connection: the book first, then the public
    messages, so a subscriber that hears a delta and reads the book finds it there; and
    outboxes sent one after another (``Publisher``) publish in batch order."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.set(book_key(outbox.symbol), outbox.snapshot)
    for key, reply in outbox.replies:
        pipe.rpush(key, reply)
        pipe.expire(key, REPLY_TTL_SECONDS)
    if outbox.public:
        channel = public_channel(outbox.symbol)
        for message in outbox.public:
            pipe.publish(channel, message)
    pipe.execute()
    if outbox.messages:
        # One trip into the event loop for the whole batch, the sends concurrent: one
        # async_to_sync per message cost the next batch a millisecond per account.
        if loop is None:
            async_to_sync(_group_send_all)(get_channel_layer(), outbox.messages)
        else:
            loop.run_until_complete(_group_send_all(get_channel_layer(), outbox.messages))
    _observe_latency(outbox)
    log.info(
        "market %s: published up to sequence %d: %d order replies",
        outbox.symbol,
        outbox.sequence,
        len(outbox.replies),
        extra={
            "market": outbox.symbol,
            "sequence": outbox.sequence,
            "request_ids": [c.request_id for c in outbox.commands if c.request_id],
        },
    )


def _observe_latency(outbox: Outbox) -> None:
    """Each command's wait from its creation (the placing transaction) to the commit of
    the batch that applied it."""
    if not outbox.commands:
        return
    latency = MATCHER_COMMAND_LATENCY.labels(outbox.symbol)
    for command in outbox.commands:
        latency.observe(outbox.committed_at - command.created_at.timestamp())


class Publisher:
    """Sends outboxes in the order given, from a thread of its own, so the matcher
    starts its next batch while the last one's results travel (Redis and the channel
    layer cost a small batch as much as its SQL). ``stop`` sends what is queued."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Outbox | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="matcher-publisher", daemon=True)
        self.thread.start()

    def submit(self, outbox: Outbox) -> None:
        self.queue.put(outbox)

    def stop(self, timeout: float = 10) -> None:
        self.queue.put(None)
        self.thread.join(timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        while (outbox := self.queue.get()) is not None:
            try:
                outbox_send(outbox, loop)
            except Exception:
                # Redis can be rebuilt from PostgreSQL: a lost publish is a gap that
                # subscribers resync over, never lost money state.
                log.exception("market %s: publishing a batch failed", outbox.symbol)
        loop.close()


async def _group_send_all(layer, messages: list[tuple[str, dict]]) -> None:
    await asyncio.gather(*(layer.group_send(group, message) for group, message in messages))
