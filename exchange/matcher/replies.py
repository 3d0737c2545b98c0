"""Waiting for the matcher's word on an order, as a placing request does.

The matcher pushes every order it changed onto the Redis list ``reply_key(order_id)``
after its batch commits (``publish.publish``), and lets the list expire a minute
later. A list, not a channel group, so a reader that starts waiting late still finds
the reply.
"""

from __future__ import annotations

import json
import time

import redis

from dex.redis import redis_client
from exchange.matcher.publish import reply_key
from exchange.models import TERMINAL_STATUSES


def order_reply_wait(*, order_id: int, timeout: float, terminal: bool = False) -> dict | None:
    """The matcher's first reply about ``order_id`` (its first *terminal* one when
    ``terminal``), or None if none comes within ``timeout`` seconds or Redis is away."""
    if timeout <= 0:
        return None
    deadline = time.monotonic() + timeout
    client = redis_client()
    key = reply_key(order_id)
    try:
        while (left := deadline - time.monotonic()) > 0:
            # BLPOP takes whole or fractional seconds; never 0, which would block forever.
            popped = client.blpop([key], timeout=max(left, 0.01))
            if popped is None:
                return None
            reply = json.loads(popped[1])
            if not terminal or reply.get("status") in TERMINAL_STATUSES:
                return reply
    except redis.RedisError:
        return None
    return None
