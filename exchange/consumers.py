"""The market-data and account WebSocket stream: ``/ws/stream/``.

One socket carries any number of channels (up to ``WS_MAX_SUBSCRIPTIONS``), chosen with
``subscribe`` / ``unsubscribe`` messages: ``book.<SYMBOL>``, ``trades.<SYMBOL>``,
``ticker.<SYMBOL>``, ``candles.<SYMBOL>.<interval>`` and, once authenticated,
``account``. The protocol is documented in the README ("WebSocket streams").

Book consistency: the matcher writes the full book with its sequence to Redis and then
publishes each batch's ``book.delta`` (and ``trades``) to the market's pub/sub channel,
which this process hears once per market (``exchange.streams_hub``) and hands to each
subscribed consumer. A subscriber joins the market's hub *before* it reads the
snapshot, so every delta published after the snapshot it read reaches it. The market's
messages that arrive while a snapshot is being read are held until it has been sent;
then the deltas the snapshot already contains are dropped and the rest must chain
(``first_sequence`` = previous ``sequence`` + 1). A delta the hub merged across the
snapshot's sequence goes out from the snapshot on (``first_sequence`` = the snapshot's
``sequence`` + 1): its levels are their sizes after its last sequence, so it is exact
from there. A delta that does not chain (one was lost, e.g. while the hub's pub/sub
connection was down; the hub also asks for a resync when it subscribes again) makes
the server send a fresh snapshot, so the client sees a gap only if the server itself
is wrong — and it still checks. Private ``account``
messages come through the channel layer (group ``account.<id>``).

Sending never blocks a handler: messages go to a bounded per-connection queue that one
writer task drains into the socket. A client that does not read fills that queue and is
disconnected (4509) instead of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max
from django.http.request import HttpHeaders
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed

from dex.api.authentication import ApiKeyAuthentication, Trader, WalletSessionAuthentication
from dex.api.rls import rls_scope
from dex.metrics import WS_CONNECTIONS, WS_SEND_LATENCY, WS_SEND_SAMPLE_EVERY
from dex.redis import redis_client
from exchange import streams_hub
from exchange.matcher.publish import book_key, decimal_plain
from exchange.models import Account, ApiKeyScope, Market, OrderCommand, Side, WebSocketConnection
from exchange.notify import api_key_group, session_group
from exchange.selectors import candle_list, database_levels, ticker_24h
from exchange.services.orders import order_cancel_all
from portfolio.selectors import balance_list

log = logging.getLogger(__name__)

# Close codes (also in the README).
CLOSE_BAD_MESSAGE = 4400
CLOSE_AUTH_FAILED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN_CHANNEL = 4404
CLOSE_HEARTBEAT_TIMEOUT = 4408
CLOSE_TOO_MANY = 4429
CLOSE_SLOW_CONSUMER = 4509

MAX_INBOUND_BYTES = 4096
SYMBOL = r"[A-Z][A-Z0-9]{1,11}-[A-Z][A-Z0-9]{1,11}"
SYMBOL_NAME = re.compile(SYMBOL)
CREDENTIAL = re.compile(r"[\x21-\x7e]{1,256}")  # a session token or an API key: printable ASCII
CHANNEL = re.compile(
    rf"(?P<kind>book|trades|ticker)\.(?P<symbol>{SYMBOL})"
    rf"|(?P<candles>candles)\.(?P<csymbol>{SYMBOL})\.(?P<interval>1m|5m|1h|1d)"
    r"|(?P<account>account)"
)


class Refused(Exception):
    """A client message the server answers with an error and a close."""

    def __init__(self, code: str, close_code: int, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code
        self.close_code = close_code
        self.message = message


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="microseconds")


# --- reads (run in threads) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarketRef:
    id: int
    symbol: str


_markets: dict[str, MarketRef] = {}


def market_ref(symbol: str) -> MarketRef | None:
    """Markets are never deleted nor renamed, so a market once found is cached."""
    ref = _markets.get(symbol)
    if ref is None:
        market = Market.objects.filter(symbol=symbol).only("id", "symbol").first()
        if market is None:
            return None
        ref = _markets[symbol] = MarketRef(market.pk, market.symbol)
    return ref


def published_book(market: MarketRef) -> dict | None:
    """The matcher's latest published book, if there is one."""
    raw = redis_client().get(book_key(market.symbol))
    if raw is None:
        return None
    book = json.loads(raw)
    return {"sequence": book["sequence"], "bids": book["bids"], "asks": book["asks"]}


def database_book(market: MarketRef) -> dict:
    """The book of the open orders at the journal's last sequence, read in one
    repeatable-read transaction so the two agree: for when no matcher has published one
    (none has run since Redis was emptied, so none has moved the book either)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        sequence = OrderCommand.objects.filter(market_id=market.id).aggregate(m=Max("sequence"))
        ref = Market(pk=market.id, symbol=market.symbol)
        return {
            "sequence": sequence["m"] or 0,
            "bids": [list(level) for level in database_levels(ref, Side.BUY, 1000)],
            "asks": [list(level) for level in database_levels(ref, Side.SELL, 1000)],
        }


async def book_snapshot(market: MarketRef) -> dict:
    book = await sync_to_async(published_book, thread_sensitive=False)(market)
    if book is None:
        book = await database_sync_to_async(database_book)(market)
    return book


def _public(name: str) -> bool:
    """A channel fed by the market's hub."""
    return name.startswith(("book.", "trades."))


def _text(value: Decimal | None) -> str | None:
    return None if value is None else decimal_plain(value)


def ticker_message(market: MarketRef) -> dict:
    t = ticker_24h(market=Market(pk=market.id, symbol=market.symbol))
    return {
        "type": "ticker",
        "symbol": market.symbol,
        "last_price": _text(t.last_price),
        "last_trade_at": t.last_trade_at.isoformat() if t.last_trade_at else None,
        "open": _text(t.open),
        "high": _text(t.high),
        "low": _text(t.low),
        "change": _text(t.change),
        "change_percent": _text(t.change_percent),
        "volume": _text(t.volume),
        "quote_volume": _text(t.quote_volume),
        "trade_count": t.trade_count,
        "best_bid": t.best_bid,
        "best_ask": t.best_ask,
    }


def candle_message(market: MarketRef, interval: str) -> dict | None:
    candles = candle_list(
        market=Market(pk=market.id, symbol=market.symbol), interval=interval, limit=2
    )
    if not candles:
        return None
    c = candles[-1]
    return {
        "type": "candle",
        "symbol": market.symbol,
        "interval": interval,
        "open_time": c.open_time.isoformat(),
        "close_time": c.close_time.isoformat(),
        "open": decimal_plain(c.open),
        "high": decimal_plain(c.high),
        "low": decimal_plain(c.low),
        "close": decimal_plain(c.close),
        "volume": decimal_plain(c.volume),
        "quote_volume": decimal_plain(c.quote_volume),
        "trade_count": c.trade_count,
    }


def balances_message(account: Account) -> dict:
    with rls_scope(account.pk):
        rows = [
            {
                "asset": b.asset.symbol,
                "available": decimal_plain(b.available),
                "held": decimal_plain(b.held),
                "total": decimal_plain(b.total),
            }
            for b in balance_list(account=account)
        ]
    return {"type": "account.balances", "balances": rows}


def authenticate(meta: dict) -> tuple[Trader, str] | None:
    """The trader a credential names, checked by the same classes as the REST API
    (``AuthenticationFailed`` for a bad one), with the group through which the
    credential's revocation reaches the connection; None without a credential."""
    request = SimpleNamespace(META=meta, headers=HttpHeaders(meta))
    for scheme in (WalletSessionAuthentication, ApiKeyAuthentication):
        found = scheme().authenticate(request)
        if found is not None:
            trader, credential = found
            if trader.api_key_id is not None:
                return trader, api_key_group(trader.api_key_id)
            return trader, session_group(credential)  # the token as the scheme read it
    return None


def client_address(scope: dict, headers: dict[str, str]) -> str | None:
    address = (scope.get("client") or [None])[0]
    proxies = settings.API_TRUSTED_PROXIES
    if proxies > 0:
        hops = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
        if len(hops) >= proxies:
            address = hops[-proxies]
    try:
        return str(ipaddress.ip_address(address or ""))
    except ValueError:
        return None


# --- ticker and candles: one poller per market and process ------------------------------


class Feed:
    """Recomputes one ticker or candle channel every ``interval`` seconds while this
    process has subscribers to it, and hands each new value to all of them: one query per
    market and interval per web process, however many sockets watch."""

    def __init__(self, key: str, compute: Callable[[], dict | None], interval: float) -> None:
        self.key = key
        self.compute = compute
        self.interval = interval
        self.subscribers: set[StreamConsumer] = set()
        self.last: dict | None = None
        self.task: asyncio.Task | None = None

    def join(self, consumer: StreamConsumer) -> None:
        self.subscribers.add(consumer)
        if self.last is not None:
            consumer.deliver(self.last)
        if self.task is None:
            self.task = asyncio.create_task(self._run())

    def leave(self, consumer: StreamConsumer) -> bool:
        """Returns True when nobody is left (the feed has stopped)."""
        self.subscribers.discard(consumer)
        if self.subscribers:
            return False
        if self.task is not None:
            self.task.cancel()
        return True

    async def _run(self) -> None:
        while True:
            try:
                message = await database_sync_to_async(self.compute)()
            except Exception:
                log.exception("stream feed %s failed", self.key)
                message = None
            if message is not None and message != self.last:
                self.last = message
                for consumer in list(self.subscribers):
                    consumer.deliver(message)
            await asyncio.sleep(self.interval)


# Per event loop: a feed's task belongs to the loop it was started on.
_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Feed]] = (
    weakref.WeakKeyDictionary()
)


def _feed(key: str, compute: Callable[[], dict | None], interval: float) -> Feed:
    feeds = _feeds.setdefault(asyncio.get_running_loop(), {})
    if key not in feeds:
        feeds[key] = Feed(key, compute, interval)
    return feeds[key]


def _feed_leave(key: str, consumer: StreamConsumer) -> None:
    feeds = _feeds.get(asyncio.get_running_loop(), {})
    feed = feeds.get(key)
    if feed is not None and feed.leave(consumer):
        del feeds[key]


# --- the consumer ------------------------------------------------------------------------


class StreamConsumer(AsyncJsonWebsocketConsumer):
    async def dispatch(self, message: dict) -> None:
        """Channels' ``dispatch`` without its ``aclose_old_connections()`` before every
        message: that is a hop through the process's one thread-sensitive worker
        thread, so every delta to every subscriber queued behind every other. This
        consumer reaches the database only through ``database_sync_to_async``, which
        closes stale connections itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    # --- connection lifecycle -----------------------------------------------------------

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.connection_id = uuid.uuid4()
        self.trader: Trader | None = None
        self.credential_group: str | None = None  # where its revocation reaches us
        self.credential_meta: dict | None = None  # the credential, to check it again
        self.subscriptions: dict[str, MarketRef | None] = {}
        self.book_sequence: dict[str, int] = {}  # symbol -> last sequence sent
        # symbol -> the market's hub messages held while its snapshot is read
        self.held: dict[str, list[tuple[dict, str]]] = {}
        self.read_again: dict[str, bool] = {}  # symbol -> resync: one more snapshot wanted
        self.groups_joined: set[str] = set()
        self.hubs_joined: set[str] = set()  # market symbols
        self.closing = False
        self.close_code: int | None = None  # the code the server closed with
        self.sent = self.received = 0
        self.dirty = False
        self.row_id: int | None = None
        self.last_heard = loop.time()
        self.last_flush = loop.time()
        self.dead_man: list[MarketRef] = []
        self.dead_man_timeout: float | None = None
        self.dead_man_fired = False
        self.balance_refresh: asyncio.Task | None = None
        self.rate = float(settings.WS_MAX_MESSAGES_PER_SECOND)
        self.allowance = self.rate
        self.allowance_at = loop.time()
        self.outbox: asyncio.Queue = asyncio.Queue(maxsize=settings.WS_SEND_QUEUE_LIMIT)
        self.tasks: list[asyncio.Task] = []

        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in self.scope.get("headers", [])
        }
        self.address = client_address(self.scope, headers)
        self.user_agent = headers.get("user-agent", "")[:256]
        await self.accept()
        WS_CONNECTIONS.inc()
        self.counted = True
        self.tasks = [asyncio.create_task(self._write()), asyncio.create_task(self._watch())]

        meta = {}
        if "authorization" in headers:
            meta["HTTP_AUTHORIZATION"] = headers["authorization"]
        if "x-api-key" in headers:
            meta["HTTP_X_API_KEY"] = headers["x-api-key"]
        if meta:
            try:
                found = await database_sync_to_async(authenticate)(meta)
            except AuthenticationFailed as exc:
                found = None
                self.refuse(Refused("AUTH_FAILED", CLOSE_AUTH_FAILED, str(exc.detail)))
            if found is not None:
                self.trader, self.credential_group = found
                self.credential_meta = meta
                await self._join(self.credential_group)
        await self._open_row()

    async def disconnect(self, code) -> None:
        if getattr(self, "counted", False):
            WS_CONNECTIONS.dec()
            self.counted = False
        self.closing = True
        for task in self.tasks:
            task.cancel()
        if self.balance_refresh is not None:
            self.balance_refresh.cancel()
        for name, market in list(self.subscriptions.items()):
            self._leave_feed(name, market)
        for symbol in self.hubs_joined:
            streams_hub.leave(symbol, self)
        self.hubs_joined.clear()
        try:
            # The dead-man switch first: it must not depend on the channel layer.
            if self.dead_man and not self.dead_man_fired:
                await self._cancel_orders("disconnect")
            for group in self.groups_joined:
                try:
                    await self.channel_layer.group_discard(group, self.channel_name)
                except Exception:  # the layer's Redis gone: the group entry expires
                    log.warning("ws %s: could not leave %s", self.connection_id, group)
        finally:
            await self._flush(closed=True, code=self.close_code or code)

    # --- sending --------------------------------------------------------------------------

    def deliver(self, message: dict) -> None:
        """Queue ``message`` for the client; never waits. A full queue means the client
        is not reading: it is disconnected rather than buffered for."""
        if not self.closing:
            self.deliver_text(json.dumps(message, separators=(",", ":")))

    def deliver_text(self, text: str) -> None:
        """``deliver`` for a message already encoded (the hub's: once for every socket)."""
        if self.closing:
            return
        try:
            self.outbox.put_nowait((time.perf_counter(), text))
        except asyncio.QueueFull:
            self._slow_consumer()

    def _slow_consumer(self) -> None:
        log.warning("ws %s: slow consumer disconnected", self.connection_id)
        self.closing = True
        for task in self.tasks:
            task.cancel()
        self.close_code = CLOSE_SLOW_CONSUMER
        self.tasks.append(asyncio.create_task(self.close(code=CLOSE_SLOW_CONSUMER)))

    def refuse(self, refused: Refused) -> None:
        """Tell the client why, then close (after what is queued before it)."""
        if self.closing:
            return
        error = {"type": "error", "code": refused.code}
        if refused.message:
            error["message"] = refused.message
        self.deliver(error)
        if not self.closing:
            self.closing = True
            with contextlib.suppress(asyncio.QueueFull):
                self.outbox.put_nowait(refused.close_code)

    async def _write(self) -> None:
        while True:
            item = await self.outbox.get()
            if isinstance(item, int):
                self.close_code = item
                await self.close(code=item)
                return
            queued_at, text = item
            await self.base_send({"type": "websocket.send", "text": text})
            if self.sent % WS_SEND_SAMPLE_EVERY == 0:
                WS_SEND_LATENCY.observe(time.perf_counter() - queued_at)
            self.sent += 1

    async def send_json(self, content, close=False) -> None:
        self.deliver(content)

    # --- receiving ------------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        loop = asyncio.get_running_loop()
        self.last_heard = loop.time()
        self.received += 1
        self.dirty = True
        if self.closing:
            return
        now = loop.time()
        self.allowance = min(self.rate, self.allowance + (now - self.allowance_at) * self.rate)
        self.allowance_at = now
        try:
            if self.allowance < 1:
                raise Refused("RATE_LIMITED", CLOSE_TOO_MANY, f"at most {self.rate:g} messages/s")
            self.allowance -= 1
            if text_data is None or len(text_data) > MAX_INBOUND_BYTES:
                raise Refused("BAD_MESSAGE", CLOSE_BAD_MESSAGE, "send JSON text messages")
            try:
                content = json.loads(text_data)
            except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested too deep
                raise Refused("BAD_MESSAGE", CLOSE_BAD_MESSAGE, "not JSON") from None
            if not isinstance(content, dict) or not isinstance(content.get("type"), str):
                raise Refused("BAD_MESSAGE", CLOSE_BAD_MESSAGE, 'an object with a "type"')
            handler = self.HANDLERS.get(content["type"])
            if handler is None:
                raise Refused("UNKNOWN_MESSAGE", CLOSE_BAD_MESSAGE, content["type"][:40])
            await handler(self, content)
        except Refused as refused:
            self.refuse(refused)

    async def on_ping(self, content: dict) -> None:
        self.deliver({"type": "pong", "id": content.get("id"), "server_time": now_iso()})

    async def on_auth(self, content: dict) -> None:
        if self.trader is not None:
            raise Refused("ALREADY_AUTHENTICATED", CLOSE_BAD_MESSAGE)
        token, api_key = content.get("token"), content.get("api_key")
        if isinstance(token, str):
            credential, meta = token, {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        elif isinstance(api_key, str):
            credential, meta = api_key, {"HTTP_X_API_KEY": api_key}
        else:
            raise Refused("AUTH_FAILED", CLOSE_AUTH_FAILED, 'give "token" or "api_key"')
        if not CREDENTIAL.fullmatch(credential):
            # Before any lookup: the HTTP server refuses a NUL in a header, but JSON
            # carries one, and PostgreSQL will not compare text with it.
            raise Refused("AUTH_FAILED", CLOSE_AUTH_FAILED, "unknown credential")
        try:
            found = await database_sync_to_async(authenticate)(meta)
        except AuthenticationFailed as exc:
            raise Refused("AUTH_FAILED", CLOSE_AUTH_FAILED, str(exc.detail)) from None
        if found is None:
            raise Refused("AUTH_FAILED", CLOSE_AUTH_FAILED, "unknown credential")
        trader, self.credential_group = found
        self.trader = trader
        self.credential_meta = meta
        await self._join(self.credential_group)
        self.dirty = True
        await self._save_account()
        self.deliver(
            {
                "type": "authenticated",
                "id": content.get("id"),
                "account": trader.account.pk,
                "scopes": sorted(trader.scopes),
            }
        )

    def _channels(self, content: dict) -> list[str]:
        names = content.get("channels")
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) and len(n) <= 64 for n in names)
        ):
            raise Refused("BAD_MESSAGE", CLOSE_BAD_MESSAGE, '"channels": a list of names')
        return list(dict.fromkeys(names))

    async def on_subscribe(self, content: dict) -> None:
        names = self._channels(content)
        wanted: list[tuple[str, re.Match, MarketRef | None]] = []
        for name in names:
            match = CHANNEL.fullmatch(name)
            if match is None:
                raise Refused("UNKNOWN_CHANNEL", CLOSE_UNKNOWN_CHANNEL, name)
            market = None
            if match["account"]:
                if self.trader is None:
                    raise Refused("AUTH_REQUIRED", CLOSE_FORBIDDEN, "authenticate first")
                if not self.trader.has_scope(ApiKeyScope.READ):
                    raise Refused("FORBIDDEN", CLOSE_FORBIDDEN, "the key lacks the read scope")
            else:
                symbol = match["symbol"] or match["csymbol"]
                market = await database_sync_to_async(market_ref)(symbol)
                if market is None:
                    raise Refused("UNKNOWN_CHANNEL", CLOSE_UNKNOWN_CHANNEL, name)
            wanted.append((name, match, market))
        new = {name for name, _, _ in wanted if name not in self.subscriptions}
        if len(self.subscriptions) + len(new) > settings.WS_MAX_SUBSCRIPTIONS:
            raise Refused(
                "TOO_MANY_SUBSCRIPTIONS",
                CLOSE_TOO_MANY,
                f"at most {settings.WS_MAX_SUBSCRIPTIONS} per connection",
            )
        for name, _, market in wanted:
            self.subscriptions[name] = market
        self.dirty = True
        self.deliver({"type": "subscribed", "id": content.get("id"), "channels": names})
        for name, match, market in wanted:
            await self._start(name, match, market, again=name not in new)

    async def _start(self, name: str, match: re.Match, market: MarketRef | None, again: bool):
        if match["account"]:
            if not again:
                await self._join(f"account.{self.trader.account.pk}")
            self._refresh_balances(delay=0)
        elif match["kind"] == "book":
            # Join first, then read: every delta after the snapshot then reaches us.
            await self._join_hub(market.symbol)
            await self._send_snapshot(market, resync=False)
        elif match["kind"] == "trades":
            await self._join_hub(market.symbol)
        elif not again and match["kind"] == "ticker":
            _feed(name, lambda: ticker_message(market), settings.WS_TICKER_INTERVAL).join(self)
        elif not again and match["candles"]:
            interval = match["interval"]
            _feed(name, lambda: candle_message(market, interval), settings.WS_CANDLE_INTERVAL).join(
                self
            )

    async def on_unsubscribe(self, content: dict) -> None:
        names = [n for n in self._channels(content) if n in self.subscriptions]
        for name in names:
            market = self.subscriptions.pop(name)
            self._leave_feed(name, market)
            if name.startswith("book."):
                self.book_sequence.pop(market.symbol, None)
        # The credential's group stays whatever is unsubscribed: its revocation must
        # still close the connection.
        wanted_groups = {self._group_of(name) for name in self.subscriptions}
        wanted_groups.add(self.credential_group)
        for group in self.groups_joined - wanted_groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined &= wanted_groups
        wanted_hubs = {m.symbol for n, m in self.subscriptions.items() if _public(n)}
        for symbol in self.hubs_joined - wanted_hubs:
            streams_hub.leave(symbol, self)
        self.hubs_joined &= wanted_hubs
        self.dirty = True
        self.deliver({"type": "unsubscribed", "id": content.get("id"), "channels": names})

    async def on_cancel_on_disconnect(self, content: dict) -> None:
        if self.trader is None:
            raise Refused("AUTH_REQUIRED", CLOSE_FORBIDDEN, "authenticate first")
        if not self.trader.has_scope(ApiKeyScope.TRADE):
            raise Refused("FORBIDDEN", CLOSE_FORBIDDEN, "the key lacks the trade scope")
        symbols = content.get("markets")
        timeout = content.get("heartbeat_timeout")
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise Refused("BAD_MESSAGE", CLOSE_BAD_MESSAGE, '"markets": a list of symbols')
        for symbol in symbols:
            if not SYMBOL_NAME.fullmatch(symbol):  # before any query: no NULs, no megabytes
                raise Refused("UNKNOWN_MARKET", CLOSE_UNKNOWN_CHANNEL, symbol[:40])
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not settings.WS_DEAD_MAN_MIN_TIMEOUT <= timeout <= settings.WS_DEAD_MAN_MAX_TIMEOUT
        ):
            raise Refused(
                "BAD_MESSAGE",
                CLOSE_BAD_MESSAGE,
                f'"heartbeat_timeout": {settings.WS_DEAD_MAN_MIN_TIMEOUT:g} to '
                f"{settings.WS_DEAD_MAN_MAX_TIMEOUT:g} seconds, or null",
            )
        markets = []
        for symbol in dict.fromkeys(symbols):
            market = await database_sync_to_async(market_ref)(symbol)
            if market is None:
                raise Refused("UNKNOWN_MARKET", CLOSE_UNKNOWN_CHANNEL, symbol[:40])
            markets.append(market)
        self.dead_man = markets
        self.dead_man_timeout = float(timeout) if timeout is not None and markets else None
        self.deliver(
            {
                "type": "cancel_on_disconnect",
                "id": content.get("id"),
                "markets": [m.symbol for m in markets],
                "heartbeat_timeout": self.dead_man_timeout,
            }
        )

    HANDLERS = {
        "ping": on_ping,
        "auth": on_auth,
        "subscribe": on_subscribe,
        "unsubscribe": on_unsubscribe,
        "cancel_on_disconnect": on_cancel_on_disconnect,
    }

    # --- public market messages (from the hub) and channel-layer events -------------------

    def public_message(self, event: dict, text: str) -> None:
        """A market's ``book.delta`` or ``trades`` from the hub: ``event`` decoded once
        for the process (never changed here), ``text`` sent as it is."""
        held = self.held.get(event["symbol"])
        if held is None:
            self._public(event, text)
        elif len(held) < settings.WS_SEND_QUEUE_LIMIT:
            held.append((event, text))
        elif not self.closing:
            self._slow_consumer()  # as many waiting as the outbox may hold

    def public_resync(self, symbol: str) -> None:
        market = self.subscriptions.get(f"book.{symbol}")
        if market is not None and not self.closing:
            self._spawn(self._send_snapshot(market, resync=True))

    def _public(self, event: dict, text: str) -> None:
        symbol = event["symbol"]
        if event["type"] == "book.delta":
            last = self.book_sequence.get(symbol)
            if last is None:
                return  # trades only
            first, sequence = event["first_sequence"], event["sequence"]
            if first == last + 1:
                self.book_sequence[symbol] = sequence
                self.deliver_text(text)
            elif sequence < last or (sequence == last and first <= last):
                pass  # the snapshot already has it (the hub never merges an expiry-only
                # batch into the delta before it: see streams_hub.coalesce)
            elif first <= last:
                # Merged by the hub across the snapshot's sequence: its levels are their
                # sizes after ``sequence``, so from the snapshot on it chains.
                self.book_sequence[symbol] = sequence
                self.deliver(event | {"first_sequence": last + 1})
            else:
                log.info("ws %s: %s gap after %s (got %s)", self.connection_id, symbol, last, first)
                self.held[symbol] = []
                market = self.subscriptions[f"book.{symbol}"]
                self._spawn(self._read_snapshots(market, resync=True, retry=(event, text)))
        elif event["type"] == "trades" and f"trades.{symbol}" in self.subscriptions:
            self.deliver_text(text)

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.append(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task) -> None:
        with contextlib.suppress(ValueError):
            self.tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ws %s: resync failed", self.connection_id, exc_info=task.exception())

    async def account_balances_changed(self, event: dict) -> None:
        """A deposit, withdrawal or adjustment moved this trader's balances."""
        if "account" in self.subscriptions:
            self._refresh_balances(delay=0)

    async def credential_revoked(self, event: dict) -> None:
        """The API key or wallet session this connection signed in with has ended."""
        self.refuse(Refused("AUTH_REVOKED", CLOSE_AUTH_FAILED, "the credential was revoked"))

    async def account_orders(self, event: dict) -> None:
        if "account" not in self.subscriptions:
            return
        self.deliver({"type": "account.orders", "orders": event["orders"]})
        self._refresh_balances(delay=settings.WS_BALANCE_DEBOUNCE)

    # --- helpers ----------------------------------------------------------------------------

    async def _join_hub(self, symbol: str) -> None:
        if symbol not in self.hubs_joined:
            self.hubs_joined.add(symbol)
            await streams_hub.join(symbol, self)

    async def _join(self, group: str) -> None:
        if group not in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.add(group)

    def _group_of(self, name: str) -> str | None:
        return f"account.{self.trader.account.pk}" if name == "account" else None

    def _leave_feed(self, name: str, market: MarketRef | None) -> None:
        if name.startswith(("ticker.", "candles.")):
            _feed_leave(name, self)

    async def _send_snapshot(self, market: MarketRef, *, resync: bool) -> None:
        """Read the book and send it; the market's hub messages wait meanwhile (then those
        the snapshot has are dropped). With a read already under way, one more follows it
        (that one may have started before what asked for this)."""
        symbol = market.symbol
        if symbol in self.held:
            self.read_again[symbol] = self.read_again.get(symbol, False) or resync
            return
        self.held[symbol] = []
        await self._read_snapshots(market, resync=resync)

    async def _read_snapshots(
        self, market: MarketRef, *, resync: bool, retry: tuple[dict, str] | None = None
    ) -> None:
        """With ``self.held[symbol]`` set: read and send snapshots until none more is
        wanted, then pass on what was held. ``retry``: the delta that did not chain,
        sent if it chains with the new snapshot (dropped otherwise, not resynced for)."""
        symbol = market.symbol
        try:
            while True:
                book = await book_snapshot(market)
                if self.subscriptions.get(f"book.{symbol}") is None:
                    self.read_again.pop(symbol, None)
                    break  # unsubscribed meanwhile
                self.book_sequence[symbol] = book["sequence"]
                self.deliver(
                    {
                        "type": "book.snapshot",
                        "symbol": symbol,
                        "sequence": book["sequence"],
                        "bids": book["bids"],
                        "asks": book["asks"],
                        "resync": resync,
                    }
                )
                if symbol not in self.read_again:
                    break
                resync = self.read_again.pop(symbol)
                retry = None
        except BaseException:
            self.held.pop(symbol, None)
            self.read_again.pop(symbol, None)
            raise
        held = self.held.pop(symbol, [])
        last = self.book_sequence.get(symbol)
        if retry is not None and last is not None and retry[0]["first_sequence"] <= last + 1:
            self._public(*retry)  # it chains with the new snapshot, or overlaps it
        for n, (event, text) in enumerate(held):
            if symbol in self.held:  # a gap: another read has started; it holds the rest
                self.held[symbol].extend(held[n:])
                break
            self._public(event, text)

    def _refresh_balances(self, *, delay: float) -> None:
        """One balances message for a burst of order updates (fills move money; a
        committed batch is what the update reports, so the read sees it)."""
        if self.balance_refresh is not None and not self.balance_refresh.done():
            return

        async def refresh() -> None:
            await asyncio.sleep(delay)
            try:
                message = await database_sync_to_async(balances_message)(self.trader.account)
            except Exception:
                log.exception("ws %s: balances unavailable", self.connection_id)
                return
            if "account" in self.subscriptions:
                self.deliver(message)

        self.balance_refresh = asyncio.create_task(refresh())

    async def _watch(self) -> None:
        """Heartbeat, dead-man switch and the periodic monitoring row."""
        loop = asyncio.get_running_loop()
        idle_timeout = settings.WS_IDLE_TIMEOUT
        checked = loop.time()
        while True:
            periods = [
                idle_timeout,
                settings.WS_CONNECTION_FLUSH_SECONDS,
                settings.WS_CREDENTIAL_RECHECK_SECONDS,
            ]
            if self.dead_man_timeout:
                periods.append(self.dead_man_timeout)
            await asyncio.sleep(max(0.05, min(1.0, min(periods) / 10)))
            silent = loop.time() - self.last_heard
            if self.dead_man_timeout is not None and silent > self.dead_man_timeout:
                await self._cancel_orders("heartbeat")
                self.refuse(Refused("HEARTBEAT_TIMEOUT", CLOSE_HEARTBEAT_TIMEOUT))
                return
            if silent > idle_timeout:
                self.refuse(Refused("HEARTBEAT_TIMEOUT", CLOSE_HEARTBEAT_TIMEOUT))
                return
            if self.dirty and loop.time() - self.last_flush > settings.WS_CONNECTION_FLUSH_SECONDS:
                await self._flush()
            recheck = settings.WS_CREDENTIAL_RECHECK_SECONDS
            if self.credential_meta is not None and loop.time() - checked > recheck:
                checked = loop.time()
                if not await self._credential_valid():
                    # Expired, or its account closed: revocation sends an event, these
                    # do not. The dead-man switch still fires on the close that follows.
                    self.refuse(
                        Refused("AUTH_REVOKED", CLOSE_AUTH_FAILED, "the credential has ended")
                    )
                    return

    async def _credential_valid(self) -> bool:
        """The connection's credential, checked as a new request's would be."""
        try:
            found = await database_sync_to_async(authenticate)(self.credential_meta)
        except AuthenticationFailed:
            return False
        except Exception:  # the database or Redis not answering: checked again later
            log.warning("ws %s: credential not checked", self.connection_id, exc_info=True)
            return True
        return found is not None and found[0].account.pk == self.trader.account.pk

    async def _cancel_orders(self, why: str) -> None:
        self.dead_man_fired = True
        account = self.trader.account
        for market in self.dead_man:
            try:
                await database_sync_to_async(order_cancel_all)(
                    account=account, market=Market(pk=market.id, symbol=market.symbol)
                )
                log.info(
                    "ws %s: %s cancelled account %s's orders in %s",
                    self.connection_id,
                    why,
                    account.pk,
                    market.symbol,
                )
            except Exception:
                log.exception("ws %s: cancel-on-disconnect failed", self.connection_id)

    # --- the monitoring row ------------------------------------------------------------------

    async def _open_row(self) -> None:
        def create() -> int:
            now = timezone.now()
            return WebSocketConnection.objects.create(
                connection_id=self.connection_id,
                account=self.trader.account if self.trader else None,
                client_address=self.address,
                user_agent=self.user_agent,
                connected_at=now,
                last_seen_at=now,
            ).pk

        try:
            self.row_id = await database_sync_to_async(create)()
        except Exception:
            log.exception("ws %s: connection row not written", self.connection_id)

    async def _save_account(self) -> None:
        if self.row_id is not None:
            await database_sync_to_async(WebSocketConnection.objects.filter(pk=self.row_id).update)(
                account=self.trader.account
            )

    async def _flush(self, *, closed: bool = False, code=None) -> None:
        self.last_flush = asyncio.get_running_loop().time()
        self.dirty = False
        if self.row_id is None:
            return
        fields = {
            "subscriptions": sorted(self.subscriptions),
            "messages_sent": self.sent,
            "messages_received": self.received,
            "last_seen_at": timezone.now(),
        }
        if closed:
            fields["disconnected_at"] = fields["last_seen_at"]
            fields["close_code"] = code if isinstance(code, int) and 0 <= code < 65536 else None
        try:
            await database_sync_to_async(WebSocketConnection.objects.filter(pk=self.row_id).update)(
                **fields
            )
        except Exception:
            log.exception("ws %s: connection row not updated", self.connection_id)
