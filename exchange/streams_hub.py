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

Coalescing under load. The hub hands on what it has read once the event loop comes
round to it (``call_soon``), all of it at once. With the loop idle that is one message,
handed on as it came. With the loop busy (thousands of sockets to write) several
batches' messages wait in the pub/sub connection meanwhile, and the hub hands on each
run of them as one ``book.delta`` and one ``trades`` (``coalesce``): the delta covers
the run's sequences (``first_sequence`` of its first … ``sequence`` of its last) with
each changed level at its size after the last, which is what applying the deltas one
after another would leave; the trades message lists the run's trades in order, after
the delta that includes their batch, as published. A book kept from the stream is the
same either way; a slow moment costs the sockets fewer messages instead of a queue
that grows.
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

from dex.metrics import WS_DELTAS_COALESCED
from exchange.matcher.publish import encode, public_channel

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


def _chains(delta: dict, after: dict) -> bool:
    """``delta`` follows ``after`` with nothing between (both deltas of one market)."""
    first, last = delta.get("first_sequence"), after.get("sequence")
    return isinstance(first, int) and isinstance(last, int) and first == last + 1


def _expiry_only(delta: dict) -> bool:
    """A batch that only expired orders: it uses no sequence (``sequence`` =
    ``first_sequence`` - 1)."""
    return delta.get("sequence") == delta.get("first_sequence", 0) - 1


def _levels(earlier: list, later: list) -> list:
    sizes = dict(earlier)
    sizes.update(later)
    return [[price, size] for price, size in sizes.items()]


def delta_merge(earlier: dict, later: dict) -> dict:
    """One delta for ``earlier`` then ``later`` (which chains to it)."""
    return earlier | {
        "sequence": later["sequence"],
        "bids": _levels(earlier.get("bids", ()), later.get("bids", ())),
        "asks": _levels(earlier.get("asks", ()), later.get("asks", ())),
    }


def coalesce(messages: list[tuple[dict, str]]) -> list[tuple[dict, str]]:
    """A market's messages as read in one go, with each run of chained deltas and the
    trades published between them made one delta and one trades message (module
    docstring). Anything else, and a delta that does not chain, ends a run. Batches that
    only expired orders at the end of a run follow its delta as one delta of their own."""
    out: list[tuple[dict, str]] = []
    delta: tuple[dict, str | None] | None = None  # the run's delta; text None if merged
    tail: dict | None = None  # expiry-only batches after it, merged, held apart
    trades: tuple[dict, str | None] | None = None

    def run_end() -> None:
        nonlocal delta, tail, trades
        for item in (delta, (tail, None) if tail is not None else None, trades):
            if item is not None:
                event, text = item
                out.append((event, text if text is not None else encode(event)))
        delta = tail = trades = None

    for event, text in messages:
        kind = event.get("type")
        if kind == "book.delta" and delta is not None and _chains(event, delta[0]):
            if _expiry_only(event) and not _expiry_only(delta[0]):
                # Held apart until a delta that uses a sequence follows: merged into the
                # run now, the run would end at its last batch's sequence, and a
                # subscriber whose snapshot has that sequence (read before the expiry)
                # would drop it as already had.
                tail = event if tail is None else delta_merge(tail, event)
            else:
                if tail is not None:
                    delta, tail = (delta_merge(delta[0], tail), None), None
                delta = (delta_merge(delta[0], event), None)
        elif kind == "book.delta":
            run_end()
            delta = (event, text)
        elif kind == "trades" and delta is not None and isinstance(event.get("trades"), list):
            if trades is None:
                trades = (event, text)
            else:
                trades = (trades[0] | {"trades": trades[0]["trades"] + event["trades"]}, None)
        else:
            run_end()
            out.append((event, text))
    run_end()
    return out


class MarketHub:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.channel = public_channel(symbol)
        self.subscribers: dict[Subscriber, None] = {}  # in joining order
        self.fanout: tuple[Subscriber, ...] = ()
        self.ready = asyncio.Event()  # subscribed in Redis
        self.subscriptions = 0  # made so far; after the first, each is a reconnect
        self.task: asyncio.Task | None = None
        self.read: list[bytes] = []  # read, not yet handed on

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
                        self._received(message["data"])
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

    def _received(self, data: bytes) -> None:
        self.read.append(data)
        if len(self.read) == 1:
            asyncio.get_running_loop().call_soon(self._hand_on)

    def _hand_on(self) -> None:
        read, self.read = self.read, []
        messages = []
        for data in read:
            try:
                event, text = decode(data)
            except ValueError:
                log.error("stream hub %s: not JSON: %r", self.symbol, data[:200])
                continue
            if isinstance(event, dict):
                messages.append((event, text))
        if len(messages) > 1:
            count = len(messages)
            messages = coalesce(messages)
            if len(messages) < count:
                WS_DELTAS_COALESCED.inc(count - len(messages))
        for event, text in messages:
            self._dispatch(event, text)

    def _dispatch(self, event: dict, text: str) -> None:
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
