"""Public market data for the WebSocket stream: one Redis pub/sub subscription per market
and web process, however many sockets watch.

The matcher publishes each public message of a market (``book.delta``, ``trades``) once,
encoded as the stream sends it, to ``public_channel(symbol)`` (``exchange.matcher.publish``),
right after it writes the book. A process runs one ``MarketHub`` task per market that
has local subscribers: started by the first (``join``), stopped when the last leaves
(``leave``). It decodes each message once and hands the dict and its text to every
subscriber, in the order published (pub/sub keeps the order of one channel); the
subscriber checks the dict and sends the text as it is. The channel layer's groups copy
each message to every consumer's channel instead, and each consumer receives and
encodes it separately: that cost grows with the sockets, this does not.

``join`` returns once the subscription is live in Redis, so a subscriber that joins and
then reads the book misses no message published after that read (the book is written
before its delta is published). When the subscription is lost and made again (Redis
restarted, the connection dropped), messages may have been missed meanwhile: the hub
calls each subscriber's ``public_resync``, which sends a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import weakref
from typing import Protocol

import redis.asyncio as aioredis
from django.conf import settings

from exchange.matcher.publish import public_channel

log = logging.getLogger(__name__)

RECONNECT_FIRST_DELAY = 0.1  # seconds; doubled after each failure up to the next
RECONNECT_MAX_DELAY = 5.0


class Subscriber(Protocol):
    def public_message(self, event: dict, text: str) -> None:
        """A public message of a market joined: ``event`` decoded, ``text`` as published.
        Called on the event loop; must not block nor change ``event``."""

    def public_resync(self, symbol: str) -> None:
        """Messages of ``symbol`` may have been lost: start a resync."""


def decode(data: bytes) -> tuple[dict, str]:
    text = data.decode()
    return json.loads(text), text


class MarketHub:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.channel = public_channel(symbol)
        self.subscribers: dict[Subscriber, None] = {}  # in joining order
        self.fanout: tuple[Subscriber, ...] = ()
        self.ready = asyncio.Event()  # subscribed in Redis
        self.subscriptions = 0  # made so far; after the first, each is a reconnect
        self.task: asyncio.Task | None = None

    def add(self, subscriber: Subscriber) -> None:
        self.subscribers[subscriber] = None
        self.fanout = tuple(self.subscribers)

    def remove(self, subscriber: Subscriber) -> None:
        self.subscribers.pop(subscriber, None)
        self.fanout = tuple(self.subscribers)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"stream hub {self.symbol}")

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_DELAY
        while True:
            options = {"client_name": f"dex-hub-{os.getpid()}-{id(self):x}"}
            if not settings.REDIS_URL.startswith("unix:"):
                # TCP only: a Unix-socket connection takes no keepalive option.
                options["socket_keepalive"] = True
            client = aioredis.Redis.from_url(settings.REDIS_URL, **options)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    kind = message["type"]
                    if kind == "message":
                        self._dispatch(message["data"])
                    elif kind == "subscribe":
                        # The first, or one made again after the connection dropped
                        # (redis-py reconnects and resubscribes on its own).
                        self._subscribed()
                        delay = RECONNECT_FIRST_DELAY
            except Exception as exc:
                log.warning("stream hub %s: pub/sub lost (%r); reconnecting", self.symbol, exc)
            finally:
                self.ready.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_DELAY, delay * 2)

    def _subscribed(self) -> None:
        self.subscriptions += 1
        self.ready.set()
        if self.subscriptions > 1:
            log.info("stream hub %s: subscribed again; resyncing subscribers", self.symbol)
            for subscriber in self.fanout:
                try:
                    subscriber.public_resync(self.symbol)
                except Exception:
                    log.exception("stream hub %s: a resync failed", self.symbol)

    def _dispatch(self, data: bytes) -> None:
        try:
            event, text = decode(data)
        except ValueError:
            log.error("stream hub %s: not JSON: %r", self.symbol, data[:200])
            return
        if not isinstance(event, dict):
            return
        for subscriber in self.fanout:
            try:
                subscriber.public_message(event, text)
            except Exception:
                log.exception("stream hub %s: a subscriber failed", self.symbol)


# Per event loop: a hub's task and its Redis connection belong to the loop it started on.
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, MarketHub]] = (
    weakref.WeakKeyDictionary()
)


def hubs() -> dict[str, MarketHub]:
    """This event loop's hubs by market symbol."""
    return _hubs.setdefault(asyncio.get_running_loop(), {})


async def join(symbol: str, subscriber: Subscriber) -> None:
    """Hand ``subscriber`` the market's public messages from now on; returns once the
    process is subscribed in Redis (at once when it already was)."""
    found = hubs()
    hub = found.get(symbol)
    if hub is None:
        hub = found[symbol] = MarketHub(symbol)
        hub.start()
    hub.add(subscriber)
    if not hub.ready.is_set():
        await hub.ready.wait()


def leave(symbol: str, subscriber: Subscriber) -> None:
    """No more messages for ``subscriber``; the last to leave stops the hub."""
    found = hubs()
    hub = found.get(symbol)
    if hub is None:
        return
    hub.remove(subscriber)
    if not hub.subscribers:
        hub.stop()
        del found[symbol]
