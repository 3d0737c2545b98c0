"""One market's matcher: the in-memory book and the apply → persist cycle.

``MarketMatcher.run_batch()`` reads the market's pending commands in id order (never a
"last seen id" cursor: ids can commit out of order, so it asks for what is not yet
processed), applies them to the engine, and writes every result in ONE transaction:
orders, trades, ledger settlement (which moves the traders' positions and daily trading
statistics with the money), hold releases and the commands' done-marks. If the
transaction fails the book is rebuilt from the database, where the commands are still
pending, and the engine — deterministic — applies them again.

Ledger order within a batch: fills settle first (each consumes exactly what its order
held for the filled part), then every order whose worst-case cost fell (finished,
decremented, amended down) is released to what it still needs. An AMEND runs in a
batch of its own, because a larger amend needs more held *before* it can trade.

A command that cannot be persisted must not stop its market: retried as it is, it would
fail every batch, and every command behind it would wait. After a batch fails for any
reason but a lost or busy database, the matcher applies the failed batch's commands one
at a time (after the expiry sweep alone, when the sweep expired anything: a failure of
its own must not be pinned on a command); a command that fails alone
``UNPROCESSABLE_STRIKES`` times is marked done, refused, without being applied: a
placement is rejected and its hold released, and anything else changes nothing.

Each batch sweeps expired orders before it applies its commands: an order past its time
never trades, however long the market went without a batch.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

import psycopg
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from dex.db import ModelRows
from dex.metrics import MATCHER_COMMANDS_REFUSED
from exchange import engine
from exchange.matcher.convert import QUANTUM, market_units, to_engine
from exchange.models import (
    LIVE_STATUSES,
    MARKET_RULE_FIELDS,
    STOP_TYPES,
    TERMINAL_STATUSES,
    CommandKind,
    CommandStatus,
    Market,
    MarketStatus,
    Order,
    OrderArchive,
    OrderCommand,
    OrderStatus,
    SettlementStatus,
    Side,
    Trade,
)
from portfolio.holds import ZERO, fee_amount, order_hold_asset_id, order_hold_required
from portfolio.models import LedgerAccountKind, TransactionKind
from portfolio.selectors import trader_available
from portfolio.services.ledger import (
    hold_increase,
    holds_sync_many,
    ledger_accounts_lock_keys,
    order_holds,
    trade_account_keys,
    trade_settle_many,
    trader_account_key,
)
from portfolio.sql import sql_array

log = logging.getLogger(__name__)

BATCH_LIMIT = 500
# How many times a command must fail a batch of its own before it is refused unapplied.
UNPROCESSABLE_STRIKES = 2
UNPROCESSABLE = "UNPROCESSABLE"
# Order columns the matcher and its publishing never read: not loaded (a batch builds
# thousands of orders, and parsing these cost it more than its SELECTs).
UNREAD_ORDER_FIELDS = ("nonce", "signature", "order_hash", "metadata", "created_at", "updated_at")
# The batch's own reads, written once (compiling them as querysets cost a batch of one
# command ~5 ms of Python; see dex.db.ModelRows).
_COMMANDS = ModelRows(OrderCommand, "c")
_ORDERS = ModelRows(Order, "o", defer=UNREAD_ORDER_FIELDS)
_PENDING = (
    f"SELECT {_COMMANDS.columns}, {_ORDERS.columns}"
    f" FROM {OrderCommand._meta.db_table} AS c"
    f" LEFT JOIN {Order._meta.db_table} AS o ON o.id = c.order_id"
    f" WHERE c.market_id = %s AND c.status = '{CommandStatus.PENDING}'"
    " ORDER BY c.id LIMIT %s"
)
_ORDERS_BY_ID = (
    f"SELECT {_ORDERS.columns} FROM {Order._meta.db_table} AS o WHERE o.id = ANY(%s::bigint[])"
)
TERMINAL_EVENTS = {
    engine.EventKind.CANCELLED: OrderStatus.CANCELLED,
    engine.EventKind.EXPIRED: OrderStatus.EXPIRED,
    engine.EventKind.REJECTED: OrderStatus.REJECTED,
}


@dataclass
class BatchResult:
    """What a committed batch changed, for publishing after the commit."""

    first_sequence: int = 0
    sequence: int = 0
    commands: int = 0
    levels: dict[tuple[str, Decimal], Decimal] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    replies: dict[int, dict] = field(default_factory=dict)
    # The commands it applied (with created_at and request_id: metrics and log lines).
    applied: list[OrderCommand] = field(default_factory=list)


class MarketMatcher:
    def __init__(self, market: Market) -> None:
        self.market = market
        self.units = market_units(market)
        self.book: engine.OrderBook
        self.sequence = 0  # commands applied: the per-market, gap-free journal position
        self.trade_sequence = 0
        # Ledger account ids by key: accounts are never deleted nor re-keyed, so a
        # batch looks up only the accounts it has not met before.
        self.ledger_ids: dict = {}
        # After a failed batch: its commands up to this id run one at a time (and first,
        # when its expiry sweep expired something, the sweep alone).
        self.isolate_through: int | None = None
        self.sweep_alone = False
        # After a failed batch: whether the next batch differs from it (its commands one
        # at a time, a strike counted, the sweep alone), so that retrying at once makes
        # progress, rather than repeating what failed.
        self.retry_now = False
        self.strikes: dict[int, int] = {}  # command id -> failed batches of its own
        self.rebuild()

    # --- recovery ---------------------------------------------------------------------

    def rebuild(self) -> None:
        """Rebuild the book from the database: the open and untriggered orders, in
        time priority, continuing every counter where the database left it."""
        self.stale = True
        # Ids cached by a failed batch may name ledger accounts its rollback undid.
        self.ledger_ids = {}
        market = Market.objects.get(pk=self.market.pk)
        self.market = market
        orders = Order.objects.filter(market=market)
        # Time priority continues after every order the market has numbered: archived
        # orders keep their numbers too.
        archived = OrderArchive.objects.filter(market_id=market.pk, sequence__isnull=False)
        self.book = engine.OrderBook(
            price_band_bps=int(market.price_band * 10_000),
            sequence=max(
                orders.aggregate(m=Max("sequence"))["m"] or 0,
                archived.aggregate(m=Max("sequence"))["m"] or 0,
            ),
        )
        last_trade = Trade.objects.filter(market=market).order_by("-sequence").first()
        self.book.restore(
            [
                to_engine(order, self.units, restoring=True)
                for order in orders.filter(status__in=LIVE_STATUSES).order_by("sequence")
            ],
            last_price=self.units.price_to_ticks(last_trade.price) if last_trade else None,
        )
        if market.status == MarketStatus.HALTED:
            self.book.halt()
        self.sequence = (
            OrderCommand.objects.filter(market=market).aggregate(m=Max("sequence"))["m"] or 0
        )
        self.trade_sequence = last_trade.sequence if last_trade else 0
        self.stale = False

    # --- the cycle --------------------------------------------------------------------

    def pending(self, limit: int) -> list[OrderCommand]:
        """The market's next pending commands in id order, each with its order loaded."""
        commands = _COMMANDS.fetch_all(
            connection, _PENDING, [self.market.pk, limit], related=(("order", _ORDERS),)
        )
        # An amend runs alone: it may need more held before it can trade.
        for index, command in enumerate(commands):
            if command.kind == CommandKind.AMEND:
                return commands[: index or 1]
        return commands

    def run_batch(self, *, limit: int = BATCH_LIMIT, now_ms: int | None = None) -> BatchResult:
        """Apply and persist one batch; returns what it changed (empty when idle)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self.retry_now = False
        if self.stale:
            self.rebuild()
        isolating = self.isolate_through is not None
        commands: list[OrderCommand] = []
        swept = sweep_only = False
        try:
            with transaction.atomic(durable=True):
                sweep_only = self.sweep_alone
                limit = 0 if sweep_only else 1 if isolating else limit
                commands = self.pending(limit) if limit else []
                batch = _Batch(self, now_ms)
                # Expiry first: an order whose time has passed never trades, however long
                # the matcher was away (a restart, a takeover, a failed batch).
                swept = batch.apply_expiry()
                for command in commands:
                    if self.strikes.get(command.pk, 0) >= UNPROCESSABLE_STRIKES:
                        batch.refuse(command, UNPROCESSABLE)
                    else:
                        batch.apply(command)
                batch.record()
                if not batch.result.commands and not batch.touched:
                    self._succeeded(commands, sweep_only=sweep_only)
                    return batch.result
                batch.persist()
        except Exception as exc:
            # The engine applied what the database did not keep: the book is wrong until
            # it is rebuilt from the database (now, or before the next batch if the
            # database cannot answer now).
            self.stale = True
            log.exception("market %s: batch failed; rebuilding the book", self.market.symbol)
            self.retry_now = self._failed(
                commands, exc, isolated=isolating, swept=swept, sweep_only=sweep_only
            )
            self.rebuild()
            raise
        self._succeeded(commands, sweep_only=sweep_only)
        return batch.result

    def _succeeded(self, commands: list[OrderCommand], *, sweep_only: bool) -> None:
        self.sweep_alone = False
        if sweep_only:
            return  # the commands are still to run one at a time
        for command in commands:
            self.strikes.pop(command.pk, None)
        if self.isolate_through is not None and (
            not commands or commands[-1].pk >= self.isolate_through
        ):
            self.isolate_through = None

    def _failed(
        self,
        commands: list[OrderCommand],
        exc: Exception,
        *,
        isolated: bool,
        swept: bool,
        sweep_only: bool,
    ) -> bool:
        """After a batch of several commands fails, run its commands one at a time; count
        a failure against a command that failed alone. A batch whose expiry sweep expired
        orders cannot tell whose fault it was: the sweep runs alone next (if it fails
        again, the market waits on it: an order past its time must not trade). A lost or
        busy database (a dropped connection, a deadlock, a serialization failure) is
        nobody's fault: the batch is retried as it was.

        Returns whether the next batch differs from this one (and so may run at once)."""
        if isinstance(
            exc,
            (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError),
        ):
            return False
        if swept:
            self.sweep_alone = True
        if not commands:
            return swept and not sweep_only
        if swept or not isolated or len(commands) > 1:
            self.isolate_through = max(commands[-1].pk, self.isolate_through or 0)
            return True
        command = commands[0]
        if self.strikes.get(command.pk, 0) >= UNPROCESSABLE_STRIKES:
            # Its refusal failed too: the next batch would be this one again.
            return False
        self.strikes[command.pk] = strikes = self.strikes.get(command.pk, 0) + 1
        if strikes >= UNPROCESSABLE_STRIKES:
            log.error(
                "market %s: command %s (%s) failed %d batches of its own; refusing it",
                self.market.symbol,
                command.pk,
                command.kind,
                strikes,
            )
        return True


def _event_orders(event: engine.Event) -> tuple[int, ...]:
    if event.kind == engine.EventKind.TRADE:
        return (event.maker_order_id, event.taker_order_id)
    order_id = getattr(event, "order_id", None)
    return () if order_id is None else (order_id,)


class _Batch:
    """One batch's work: engine events turned into rows and postings."""

    def __init__(self, matcher: MarketMatcher, now_ms: int) -> None:
        self.m = matcher
        self.units = matcher.units
        self.now_ms = now_ms
        self.now = timezone.now()
        self.result = BatchResult(first_sequence=matcher.sequence + 1, sequence=matcher.sequence)
        self.orders: dict[int, Order] = {}
        self.touched: set[int] = set()
        self.resized: set[int] = set()  # amended or decremented: price/quantity changed
        self.terminal: dict[int, tuple[str, str]] = {}
        self.trades: list[Trade] = []
        self.done: list[OrderCommand] = []
        self.topups: list[tuple[Order, Decimal]] = []
        self.placing: int | None = None  # the order the current PLACE command submits
        self.refused: dict[int, str] = {}  # command id -> why it was refused unapplied
        # What the engine answered to each command (None: the expiry sweep), turned into
        # rows by record() once the whole batch has run, so the resting orders it traded
        # with are loaded in one query.
        self.answers: list[tuple[OrderCommand | None, list[engine.Event]]] = []

    # --- applying ---------------------------------------------------------------------

    def _order(self, order_id: int) -> Order:
        order = self.orders.get(order_id)
        if order is None:
            self._load([order_id])
            order = self.orders[order_id]
        return order

    def _load(self, order_ids) -> None:
        """Load orders the batch has not met yet (an order that does not exist is a
        corrupt journal: the batch fails, as ``Order.objects.get`` failed it)."""
        for order in _ORDERS.fetch_all(connection, _ORDERS_BY_ID, [sql_array(order_ids)]):
            order.market = self.m.market
            self.orders[order.pk] = order
        absent = set(order_ids) - self.orders.keys()
        if absent:
            raise Order.DoesNotExist(f"orders {sorted(absent)} do not exist")

    def apply(self, command: OrderCommand) -> None:
        m = self.m
        m.sequence += 1
        book = m.book
        if command.order_id is not None and command.order_id not in self.orders:
            command.order.market = m.market
            self.orders[command.order_id] = command.order
        kind = command.kind
        if kind == CommandKind.PLACE:
            events = book.submit(to_engine(command.order, self.units))
        elif kind == CommandKind.CANCEL:
            events = book.cancel(command.order_id)
        elif kind == CommandKind.CANCEL_ALL:
            events = book.cancel_all(command.account_id)
        elif kind == CommandKind.AMEND:
            events = self._amend(command)
        elif kind == CommandKind.HALT:
            events = book.halt()
            self._market_status(MarketStatus.HALTED)
        elif kind == CommandKind.SET_RULES:
            events = self._market_rules(command.payload)
        else:
            events = book.resume()
            self._market_status(MarketStatus.OPEN)
        command.sequence = m.sequence
        self.answers.append((command, events))
        self.result.commands += 1
        self.result.sequence = m.sequence

    def refuse(self, command: OrderCommand, reason: str) -> None:
        """Mark ``command`` done without applying it (see ``run_batch``): a placement
        is rejected, its hold released; any other command changes nothing."""
        m = self.m
        m.sequence += 1
        events: list[engine.Event] = []
        if command.kind == CommandKind.PLACE and command.order is not None:
            command.order.market = m.market
            self.orders[command.order_id] = command.order
            events.append(engine.Rejected(command.order_id, command.account_id, reason))
        self.refused[command.pk] = reason
        MATCHER_COMMANDS_REFUSED.labels(m.market.symbol, command.kind).inc()
        command.sequence = m.sequence
        self.answers.append((command, events))
        self.result.commands += 1
        self.result.sequence = m.sequence

    def record(self) -> None:
        """Turn the engine's answers into order states, trades and done-marks. An amend
        reads its order before the engine moves it, which is why it runs alone."""
        missing = {
            order_id
            for _, events in self.answers
            for event in events
            for order_id in _event_orders(event)
            if order_id not in self.orders
        }
        if missing:
            self._load(missing)
        for command, events in self.answers:
            if command is None:
                self.placing = None
                self._events(events)
                continue
            self.placing = command.order_id if command.kind == CommandKind.PLACE else None
            self._events(events)
            rejected = next((e for e in events if e.kind == engine.EventKind.REJECTED), None)
            command.status = CommandStatus.DONE
            command.processed_at = self.now
            if command.pk in self.refused:
                command.result = {"rejected": self.refused[command.pk]}
            elif rejected:
                command.result = {"rejected": str(rejected.reason)}
            else:
                command.result = {"events": len(events)}
            self.done.append(command)
        self.answers = []

    def _market_status(self, status: str) -> None:
        if self.m.market.status != status:
            Market.objects.filter(pk=self.m.market.pk).update(status=status)
            self.m.market.status = status

    def _market_rules(self, payload: dict) -> list[engine.Event]:
        """Apply new fees, minimums or price band: the market row changes in this batch,
        and the band binds the market orders from the next command on. Orders already
        accepted keep the fee rates they were accepted at (their holds reserve those);
        the web tier reads the new rates and minimums from the row for later orders."""
        rules = {name: Decimal(payload[name]) for name in MARKET_RULE_FIELDS if name in payload}
        market = self.m.market
        Market.objects.filter(pk=market.pk).update(**rules)
        for name, value in rules.items():
            setattr(market, name, value)
        if "price_band" in rules:
            self.m.book.price_band_bps = int(rules["price_band"] * 10_000)
        return []

    def _amend(self, command: OrderCommand) -> list[engine.Event]:
        """Apply an amend, first making sure the trader can fund a larger order: the
        extra hold is posted before the amended order can trade (see ``persist``)."""
        order = self._order(command.order_id)
        payload = command.payload
        price = Decimal(payload["price"]) if "price" in payload else None
        total = Decimal(payload["quantity"]) if "quantity" in payload else None
        remaining = total - order.filled if total is not None else None
        if not order.is_terminal and (remaining is None or remaining > 0):
            amended = copy.copy(order)
            amended.price = price if price is not None else order.price
            amended.remaining = remaining if remaining is not None else order.remaining
            extra = order_hold_required(amended) - order_holds([order.pk]).get(order.pk, ZERO)
            # Read, not locked: the batch locks all of its accounts at once, in
            # primary-key order, when it persists; locking these two here, first, could
            # deadlock with another market's batch. The extra hold is checked again
            # under that lock (hold_increase): funds spent in between fail this batch,
            # and the amend, applied again alone, is refused here.
            if (
                extra > 0
                and trader_available(
                    asset_id=order_hold_asset_id(order), account_id=order.account_id
                )
                < extra
            ):
                return [engine.Rejected(order.pk, None, "INSUFFICIENT_FUNDS")]
        else:
            extra = ZERO
        events = self.m.book.amend(
            order.pk,
            price=self.units.price_to_ticks(price) if price is not None else None,
            quantity=self.units.qty_to_lots(remaining) if remaining is not None else None,
        )
        if extra > 0 and any(e.kind == engine.EventKind.AMENDED for e in events):
            self.topups.append((order, extra))  # only for an amend the engine made
        return events

    def apply_expiry(self) -> bool:
        """Expire the orders whose time has passed; whether there were any."""
        events = self.m.book.expire(self.now_ms)
        self.answers.append((None, events))
        return bool(events)

    def _events(self, events: list[engine.Event]) -> None:
        K = engine.EventKind
        units = self.units
        for event in events:
            kind = event.kind
            if kind == K.LEVEL:
                side = "bids" if event.side == engine.Side.BUY else "asks"
                self.result.levels[(side, units.ticks_to_price(event.price))] = units.lots_to_qty(
                    event.quantity
                )
            elif kind == K.TRADE:
                self._trade(event)
            elif kind in (K.ACCEPTED, K.TRIGGERED, K.REFILLED):
                order = self._order(event.order_id)
                order.sequence = event.sequence
                order.accepted_at = order.accepted_at or self.now
                self.touched.add(order.pk)
            elif kind == K.AMENDED:
                order = self._order(event.order_id)
                order.price = units.ticks_to_price(event.price)
                order.remaining = units.lots_to_qty(event.remaining)
                order.quantity = order.filled + order.remaining
                order.sequence = event.sequence
                self.touched.add(order.pk)
                self.resized.add(order.pk)
            elif kind == K.DECREMENTED:
                order = self._order(event.order_id)
                if order.quantity is None:
                    # A market buy by quote amount: what self-trade prevention took off
                    # is quote (its budget), and the order has no quantity to change.
                    self.touched.add(order.pk)
                    continue
                order.remaining = units.lots_to_qty(event.remaining)
                order.quantity = order.filled + order.remaining
                if order.display_quantity is not None and order.display_quantity > order.quantity:
                    order.display_quantity = order.quantity  # an iceberg shows no more than it is
                self.touched.add(order.pk)
                self.resized.add(order.pk)
            elif kind in TERMINAL_EVENTS:
                order = self._order(event.order_id)
                if kind == K.REJECTED and event.order_id != self.placing:
                    continue  # a refused cancel or amend: the order itself stands
                reason = str(getattr(event, "reason", "") or "GTT_EXPIRED")
                self.terminal[order.pk] = (TERMINAL_EVENTS[kind], reason)
                self.touched.add(order.pk)
            elif kind == K.RESTED:
                self.touched.add(event.order_id)
                self._order(event.order_id)

    def _trade(self, event: engine.Trade) -> None:
        units = self.units
        maker = self._order(event.maker_order_id)
        taker = self._order(event.taker_order_id)
        price = units.ticks_to_price(event.price)
        quantity = units.lots_to_qty(event.quantity)
        notional = price * quantity
        for order in (maker, taker):
            order.filled += quantity
            order.filled_quote += notional
            if order.quantity is not None:
                order.remaining -= quantity
            order.average_price = (order.filled_quote / order.filled).quantize(
                QUANTUM, ROUND_HALF_EVEN
            )
            self.touched.add(order.pk)
        self.m.trade_sequence += 1
        buyer, seller = (taker, maker) if taker.side == Side.BUY else (maker, taker)
        # Each order keeps the rates it was accepted at; a rules change since may pair an
        # old rebate with a lower taker fee. The venue never pays out on a fill: the
        # rebate goes no further than the taker's fee.
        taker_fee = fee_amount(notional, taker.taker_fee_rate)
        maker_fee = max(fee_amount(notional, maker.maker_fee_rate), -taker_fee)
        self.trades.append(
            Trade(
                market=self.m.market,
                sequence=self.m.trade_sequence,
                maker_order=maker,
                taker_order=taker,
                buyer_id=buyer.account_id,
                seller_id=seller.account_id,
                aggressor_side=taker.side,
                price=price,
                quantity=quantity,
                quote_quantity=notional,
                maker_fee=maker_fee,
                taker_fee=taker_fee,
                maker_remaining=maker.remaining,
                taker_remaining=taker.remaining,
                executed_at=self.now,
            )
        )

    # --- persisting -------------------------------------------------------------------

    def _final_status(self, order: Order) -> None:
        if order.pk in self.terminal:
            order.status, order.reason = self.terminal[order.pk]
            if order.status == OrderStatus.REJECTED:
                order.sequence = order.accepted_at = None
        else:
            resting = self.m.book.get(order.pk)
            if resting is None:
                order.status = OrderStatus.FILLED  # left the book with nothing to cancel
            elif order.type in STOP_TYPES and not resting.triggered:
                order.status = OrderStatus.UNTRIGGERED
            elif order.filled:
                order.status = OrderStatus.PARTIALLY_FILLED
            else:
                order.status = OrderStatus.OPEN
        if order.status in TERMINAL_STATUSES:
            order.done_at = order.done_at or self.now

    def persist(self) -> None:
        changed = [self.orders[pk] for pk in sorted(self.touched)]
        for order in changed:
            self._final_status(order)
        _orders_update(changed, self.resized)
        # Before the accounts are locked: traders placing orders wait for those locks
        # until this batch commits, so the batch takes them as late as it can.
        _trades_insert(self.trades)
        # Lock every ledger account the batch posts to at once, in primary-key order as
        # order_place does: locked in rounds (the trades', then the releases') they
        # deadlocked with a trader placing an order on an account of the second round.
        accounts = ledger_accounts_lock_keys(
            [k for t in self.trades for k in trade_account_keys(t)]
            + [
                trader_account_key(kind, order_hold_asset_id(o), o.account_id)
                for o in changed
                for kind in (LedgerAccountKind.AVAILABLE, LedgerAccountKind.HELD)
            ],
            known=self.m.ledger_ids,
        )
        for order, extra in self.topups:  # an amend's extra hold, before it trades
            hold_increase(order=order, amount=extra, cause=f"amend:{self.m.sequence}")
            accounts = None  # the balances moved: the copies above are stale
        trade_settle_many(trades=self.trades, accounts=accounts, fresh=True)
        # Release what finished, decremented or amended-down orders no longer need.
        held = order_holds(o.pk for o in changed)
        excess = [o for o in changed if order_hold_required(o) != held.get(o.pk, ZERO)]
        # Finished orders' releases are "final"; the others' name the batch. One call:
        # one look for what was posted before, one insert.
        batch = f"seq:{self.m.sequence}@{self.now_ms}"
        holds_sync_many(
            excess,
            kind=TransactionKind.RELEASE,
            cause=lambda o: "final" if o.is_terminal else batch,
            accounts=accounts,
            current=held,
        )
        _commands_done(self.done)
        self.result.trades = self.trades
        self.result.orders = changed
        self.result.applied = self.done


# Django's bulk_update builds a CASE expression per column per row, which cost three
# quarters of a batch; one UPDATE joined to unnested column arrays does the same work in
# a single round trip (and the tables' triggers still fire for every row).
_ORDER_COLUMNS = (
    "remaining",
    "filled",
    "filled_quote",
    "average_price",
    "status",
    "reason",
    "sequence",
    "accepted_at",
    "done_at",
)
_ORDER_TYPES = (
    "numeric",
    "numeric",
    "numeric",
    "numeric",
    "text",
    "text",
    "bigint",
    "timestamptz",
    "timestamptz",
)


def _order_update_sql(columns: tuple[str, ...], types: tuple[str, ...]) -> str:
    # updated_at written here spares the row its trigger (see updated_at_stamp).
    assignments = ", ".join([*(f"{c} = v.{c}" for c in columns), "updated_at = now()"])
    arrays = ", ".join(f"%s::{t}[]" for t in ("bigint", *types))
    return (
        f"UPDATE exchange_order AS o SET {assignments} FROM unnest({arrays})"
        f" AS v(id, {', '.join(columns)}) WHERE o.id = v.id"
    )


_ORDERS_UPDATE = _order_update_sql(_ORDER_COLUMNS, _ORDER_TYPES)
# For amended or decremented orders only: naming price or quantity in the SET fires the
# trigger that checks them against the market's grid, a lookup per row.
_ORDERS_RESIZE = _order_update_sql(
    ("price", "quantity", "display_quantity", *_ORDER_COLUMNS),
    ("numeric", "numeric", "numeric", *_ORDER_TYPES),
)

# processed_at is the moment the done-marks are written, the batch's last statement
# before its commit.
_COMMANDS_DONE = """
UPDATE exchange_ordercommand AS c
   SET status = 'DONE', sequence = v.sequence, result = v.result::jsonb,
       processed_at = clock_timestamp()
  FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS v(id, sequence, result)
 WHERE c.id = v.id
"""


def _orders_update(orders: list[Order], resized: set[int]) -> None:
    """Write the batch's order states, one UPDATE for the orders whose size or price
    changed and one for the rest (a row is written by one statement only, so no
    intermediate state meets the table's checks)."""
    plain = [o for o in orders if o.pk not in resized]
    sized = [o for o in orders if o.pk in resized]
    with connection.cursor() as cursor:
        for sql, rows, columns in (
            (_ORDERS_UPDATE, plain, ("pk", *_ORDER_COLUMNS)),
            (
                _ORDERS_RESIZE,
                sized,
                ("pk", "price", "quantity", "display_quantity", *_ORDER_COLUMNS),
            ),
        ):
            if rows:
                cursor.execute(sql, [sql_array(getattr(o, c) for o in rows) for c in columns])


def _commands_done(commands: list[OrderCommand]) -> None:
    if not commands:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _COMMANDS_DONE,
            [
                sql_array(c.pk for c in commands),
                sql_array(c.sequence for c in commands),
                sql_array(json.dumps(c.result) for c in commands),
            ],
        )


_TRADES_INSERT = """
INSERT INTO exchange_trade
       (market_id, sequence, maker_order_id, taker_order_id, buyer_id, seller_id,
        aggressor_side, price, quantity, quote_quantity, maker_fee, taker_fee,
        maker_remaining, taker_remaining, settlement_status, settled_at, executed_at)
SELECT market_id, sequence, maker, taker, buyer, seller, side, price, quantity, notional,
       maker_fee, taker_fee, maker_left, taker_left, 'SETTLED', %s, %s
  FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
              %s::bigint[], %s::text[], %s::numeric[], %s::numeric[], %s::numeric[],
              %s::numeric[], %s::numeric[], %s::numeric[], %s::numeric[])
       AS v(market_id, sequence, maker, taker, buyer, seller, side, price, quantity,
            notional, maker_fee, taker_fee, maker_left, taker_left)
RETURNING id, sequence
"""


def _trades_insert(trades: list[Trade]) -> None:
    """Insert a batch's trades in one statement and give each its id. They are written
    SETTLED: the same transaction settles them (trade_settle_many), or nothing is kept."""
    if not trades:
        return
    columns = (
        "market_id",
        "sequence",
        "maker_order_id",
        "taker_order_id",
        "buyer_id",
        "seller_id",
        "aggressor_side",
        "price",
        "quantity",
        "quote_quantity",
        "maker_fee",
        "taker_fee",
        "maker_remaining",
        "taker_remaining",
    )
    with connection.cursor() as cursor:
        cursor.execute(
            _TRADES_INSERT,
            [
                trades[0].executed_at,
                trades[0].executed_at,
                *(sql_array(getattr(t, c) for t in trades) for c in columns),
            ],
        )
        ids = {sequence: pk for pk, sequence in cursor.fetchall()}
    for trade in trades:
        trade.pk = ids[trade.sequence]
        trade.settlement_status, trade.settled_at = SettlementStatus.SETTLED, trade.executed_at
        trade._state.adding = False
