"""After a batch commits: tell the world.

- ``market.<symbol>`` channel-layer group, ``book.delta``: the changed levels with the
  range of journal sequences they cover (``first_sequence`` … ``sequence``); a client
  whose ``first_sequence`` is not its last ``sequence`` + 1 has missed one and resyncs.
- ``market.<symbol>`` ``market.trades``: the batch's trades.
- ``account.<id>`` ``account.orders``: each trader's changed orders and fills.
- Redis ``dex:book:<symbol>``: the full book (top levels) with its sequence, for new
  subscribers and REST depth reads; ``dex:order-reply:<id>``: the order's state after
  matching, which the placing request may be waiting for (a list, so a reader that
  starts waiting late still finds it).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from decimal import Decimal

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from exchange.matcher.market import BatchResult, MarketMatcher
from exchange.models import Order

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


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def snapshot(matcher: MarketMatcher) -> dict:
    units = matcher.units
    bids, asks = matcher.book.depth(SNAPSHOT_LEVELS)
    return {
        "symbol": matcher.market.symbol,
        "sequence": matcher.sequence,
        "bids": [[str(units.ticks_to_price(p)), str(units.lots_to_qty(q))] for p, q in bids],
        "asks": [[str(units.ticks_to_price(p)), str(units.lots_to_qty(q))] for p, q in asks],
    }


def publish_snapshot(matcher: MarketMatcher) -> None:
    """The whole book, for a matcher that has just (re)built it."""
    redis_client().set(book_key(matcher.market.symbol), json.dumps(snapshot(matcher)))


def publish(matcher: MarketMatcher, result: BatchResult) -> None:
    symbol = matcher.market.symbol
    client = redis_client()
    pipe = client.pipeline(transaction=False)
    pipe.set(book_key(symbol), json.dumps(snapshot(matcher)))
    for order in result.orders:
        key = reply_key(order.pk)
        pipe.rpush(key, json.dumps(order_view(order)))
        pipe.expire(key, REPLY_TTL_SECONDS)
    pipe.execute()

    layer = get_channel_layer()
    group_send = async_to_sync(layer.group_send)
    group = f"market.{symbol}"
    group_send(
        group,
        {
            "type": "book.delta",
            "symbol": symbol,
            "first_sequence": result.first_sequence,
            "sequence": result.sequence,
            "bids": [[str(p), str(q)] for (side, p), q in result.levels.items() if side == "bids"],
            "asks": [[str(p), str(q)] for (side, p), q in result.levels.items() if side == "asks"],
        },
    )
    if result.trades:
        group_send(
            group,
            {
                "type": "market.trades",
                "symbol": symbol,
                "trades": [
                    {
                        "id": t.pk,
                        "sequence": t.sequence,
                        "price": str(t.price),
                        "quantity": str(t.quantity),
                        "side": t.aggressor_side,
                        "time": t.executed_at.isoformat(),
                    }
                    for t in result.trades
                ],
            },
        )
    per_account: dict[int, list[dict]] = defaultdict(list)
    for order in result.orders:
        per_account[order.account_id].append(order_view(order))
    for account_id, orders in per_account.items():
        group_send(f"account.{account_id}", {"type": "account.orders", "orders": orders})
