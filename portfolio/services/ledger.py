"""Posting money: the one place that writes ledger transactions and postings.

Every function here takes its ledger-account locks in primary-key order before it
reads a balance, and names the economic event with an idempotency key, so a retried
call posts once. Top-level services own a durable transaction; the ``*_many`` helpers
join the caller's (the matcher persists a whole batch in one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from exchange.models import Order, SettlementStatus, Side, Trade
from portfolio.holds import (
    ZERO,
    buy_fill_consumes,
    order_hold_asset_id,
    order_hold_required,
)
from portfolio.lock_objects import ledger_accounts_lock, trader_accounts_lock
from portfolio.models import (
    LedgerAccount,
    LedgerAccountKind,
    LedgerTransaction,
    Posting,
    TransactionKind,
)
from portfolio.services.positions import positions_apply
from portfolio.sql import sql_array


class LedgerError(Exception):
    """A money movement that cannot be made; nothing was posted."""

    code = "LEDGER_ERROR"


class InsufficientFunds(LedgerError):
    code = "INSUFFICIENT_FUNDS"


# --------------------------------------------------------------------------------------
# Ledger accounts
# --------------------------------------------------------------------------------------

AccountKey = tuple[str, int, int | None, int | None]  # kind, asset, owner, market


def trader_account_key(kind: str, asset_id: int, owner_id: int) -> AccountKey:
    return (kind, asset_id, owner_id, None)


def fee_account_key(asset_id: int, market_id: int) -> AccountKey:
    return (LedgerAccountKind.FEE_REVENUE, asset_id, None, market_id)


def venue_account_key(kind: str, asset_id: int) -> AccountKey:
    return (kind, asset_id, None, None)


def ledger_accounts_ensure(keys: Iterable[AccountKey]) -> dict[AccountKey, int]:
    """The ids of the ledger accounts for ``keys``, creating any that do not exist
    (concurrent creators are harmless: the unique constraint keeps one)."""
    wanted = set(keys)
    found = _ledger_account_ids(wanted)
    missing = wanted - found.keys()
    if missing:
        LedgerAccount.objects.bulk_create(
            [
                LedgerAccount(kind=kind, asset_id=asset, owner_id=owner, market_id=market)
                for kind, asset, owner, market in missing
            ],
            ignore_conflicts=True,
        )
        found |= _ledger_account_ids(missing)
    return found


_ACCOUNT_IDS = (
    f"SELECT id, kind, asset_id, owner_id, market_id FROM {LedgerAccount._meta.db_table}"
    " WHERE kind = ANY(%s::text[]) AND asset_id = ANY(%s::bigint[])"
)
_TRADERS_ACCOUNT_IDS = _ACCOUNT_IDS + " AND owner_id = ANY(%s::bigint[])"
_VENUE_ACCOUNT_IDS = _ACCOUNT_IDS + " AND owner_id IS NULL"


def _ledger_account_ids(keys: set[AccountKey]) -> dict[AccountKey, int]:
    if not keys:
        return {}
    kinds = sql_array({k[0] for k in keys})
    assets = sql_array({k[1] for k in keys})
    owners = {k[2] for k in keys if k[2] is not None}
    queries = []
    if owners:  # traders' accounts
        queries.append((_TRADERS_ACCOUNT_IDS, [kinds, assets, sql_array(owners)]))
    if any(k[2] is None for k in keys):  # the venue's
        queries.append((_VENUE_ACCOUNT_IDS, [kinds, assets]))
    found: dict[AccountKey, int] = {}
    with connection.cursor() as cursor:
        for sql, params in queries:
            cursor.execute(sql, params)
            for pk, *key in cursor.fetchall():
                if tuple(key) in keys:
                    found[tuple(key)] = pk
    return found


def ledger_accounts_lock_keys(
    keys: Iterable[AccountKey], *, known: dict[AccountKey, int] | None = None
) -> dict[AccountKey, LedgerAccount]:
    """Create if needed, then lock (in primary-key order) the accounts for ``keys``.
    Call inside a transaction. ``known`` is a caller's cache of account ids (an
    account, once created, keeps its id and key forever): keys found there are not
    looked up, and the ids of the others are added to it."""
    wanted = set(keys)
    if known is None and len({(asset, owner, market) for _, asset, owner, market in wanted}) == 1:
        # One trader's accounts in one asset (an order placement's two): locked by key
        # in one round trip; any not yet created are created and locked after them
        # (their ids are newer, so the locks are still taken in primary-key order).
        _, asset, owner, market = next(iter(wanted))
        if owner is not None and market is None:
            locked = {
                (a.kind, a.asset_id, a.owner_id, None): a
                for a in trader_accounts_lock((k[0] for k in wanted), asset, owner)
            }
            missing = wanted - locked.keys()
            if missing:
                created = ledger_accounts_ensure(missing)
                by_id = ledger_accounts_lock(created.values())
                locked.update((key, by_id[pk]) for key, pk in created.items())
            return locked
    if known is None:
        ids = ledger_accounts_ensure(wanted)
    else:
        missing = wanted - known.keys()
        if missing:
            known.update(ledger_accounts_ensure(missing))
        ids = {key: known[key] for key in wanted}
    locked = ledger_accounts_lock(ids.values())
    return {key: locked[pk] for key, pk in ids.items()}


# --------------------------------------------------------------------------------------
# Posting
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leg:
    account: LedgerAccount
    amount: Decimal
    order_id: int | None = None


@dataclass(slots=True)
class Entry:
    """One ledger transaction to write: its kind, key, references and legs."""

    kind: str
    idempotency_key: str
    legs: list[Leg]
    description: str = ""
    order_id: int | None = None
    trade_id: int | None = None
    vault_operation_id: int | None = None
    adjustment_id: int | None = None


# One INSERT per table for a whole batch, its columns passed as arrays (Django's
# bulk_create compiled each value separately and cost half of a matcher batch), both in
# one statement: each posting finds its transaction by the idempotency key, so the ids
# need no round trip back to Python first. Postings go in in the order of their legs;
# each table's statement triggers run once the whole statement is done, seeing both.
_ENTRIES_INSERT = """
WITH t AS (
    INSERT INTO portfolio_ledgertransaction
           (kind, idempotency_key, description, order_id, trade_id, vault_operation_id,
            adjustment_id)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[],
                         %s::bigint[], %s::bigint[])
    RETURNING id, idempotency_key
), p AS (
    INSERT INTO portfolio_posting (transaction_id, ledger_account_id, amount, order_id)
    SELECT t.id, v.account, v.amount, v.order_id
      FROM unnest(%s::text[], %s::bigint[], %s::numeric[], %s::bigint[])
           WITH ORDINALITY AS v(key, account, amount, order_id, n)
      JOIN t ON t.idempotency_key = v.key
     ORDER BY v.n
    RETURNING 1
)
SELECT id, idempotency_key, (SELECT count(*) FROM p) FROM t
"""


def entries_post(entries: Sequence[Entry]) -> Sequence[LedgerTransaction]:
    """Write ``entries`` (skipping zero legs): one statement inserting the ledger
    transactions and their postings. Call inside a transaction holding the locks on
    every leg's account; the caller has already dropped entries whose idempotency key
    was posted before. PostgreSQL checks at commit that each balances per asset, and
    refuses any balance that would go negative."""
    if not entries:
        return ()
    postings: tuple[list, list, list, list] = ([], [], [], [])
    for entry in entries:
        for leg in entry.legs:
            if leg.amount:
                postings[0].append(entry.idempotency_key)
                postings[1].append(leg.account.pk)
                postings[2].append(leg.amount)
                postings[3].append(leg.order_id)
    with connection.cursor() as cursor:
        cursor.execute(
            _ENTRIES_INSERT,
            [
                sql_array(e.kind for e in entries),
                sql_array(e.idempotency_key for e in entries),
                sql_array(e.description for e in entries),
                sql_array(e.order_id for e in entries),
                sql_array(e.trade_id for e in entries),
                sql_array(e.vault_operation_id for e in entries),
                sql_array(e.adjustment_id for e in entries),
                *(sql_array(column) for column in postings),
            ],
        )
        rows = cursor.fetchall()
    # Every leg found its transaction (a posting that did not would be lost without a
    # trace: a transaction with no postings balances).
    if rows[0][2] != len(postings[0]):
        raise LedgerError(f"{rows[0][2]} postings written of {len(postings[0])}")
    ids = {key: pk for pk, key, _ in rows}
    for entry in entries:
        for leg in entry.legs:
            leg.account.balance += leg.amount  # keep the locked copy current
    return Posted(entries, ids)


class Posted(Sequence[LedgerTransaction]):
    """The ledger transactions ``entries_post`` wrote, as ``LedgerTransaction`` rows built
    when read: the matcher posts thousands a second and reads none of them back."""

    def __init__(self, entries: Sequence[Entry], ids: dict[str, int]) -> None:
        self._entries = entries
        self._ids = ids

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        e = self._entries[index]
        return LedgerTransaction(
            pk=self._ids[e.idempotency_key],
            kind=e.kind,
            idempotency_key=e.idempotency_key,
            description=e.description,
            order_id=e.order_id,
            trade_id=e.trade_id,
            vault_operation_id=e.vault_operation_id,
            adjustment_id=e.adjustment_id,
        )


_POSTED_KEYS = (
    f"SELECT idempotency_key FROM {LedgerTransaction._meta.db_table}"
    " WHERE idempotency_key = ANY(%s::text[])"
)


def posted_keys(keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` name a ledger transaction already posted."""
    keys = list(keys)
    if not keys:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(_POSTED_KEYS, [sql_array(keys)])
        return {key for (key,) in cursor.fetchall()}


def require_available(account: LedgerAccount, amount: Decimal, asset_symbol: str) -> None:
    if account.balance < amount:
        raise InsufficientFunds(
            f"insufficient {asset_symbol}: {amount} needed, {account.balance} available"
        )


# --------------------------------------------------------------------------------------
# Holds for orders
# --------------------------------------------------------------------------------------


_ORDER_HOLDS = (
    f"SELECT order_id, SUM(amount) FROM {Posting._meta.db_table}"
    " WHERE order_id = ANY(%s::bigint[]) GROUP BY order_id"
)


def order_holds(order_ids: Iterable[int]) -> dict[int, Decimal]:
    """What is held for each order now: the sum of its HELD postings (only postings to
    HELD accounts name an order)."""
    ids = list(order_ids)
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_ORDER_HOLDS, [sql_array(ids)])
        return dict(cursor.fetchall())


def holds_sync_many(
    orders: Sequence[Order],
    *,
    kind: str,
    cause: str | Callable[[Order], str],
    accounts: dict[AccountKey, LedgerAccount] | None = None,
    current: dict[int, Decimal] | None = None,
    fresh: bool = False,
) -> Sequence[LedgerTransaction]:
    """Move each order's hold to exactly what it may still cost (``order_hold_required``):
    up for a new or enlarged order (``kind`` HOLD), down for a cancel, an expiry or a
    reduced order (RELEASE). ``cause`` names the event (``placed``, ``amend:<command>``,
    ``final`` …), or is a function naming each order's, and makes the move idempotent:
    retried, it posts nothing. Raises ``InsufficientFunds`` — posting nothing — when a
    trader cannot cover an increase.
    Call inside a transaction, with the orders' rows already in their new state.
    ``accounts``: the orders' AVAILABLE and HELD accounts, when the caller has locked
    them already (the matcher locks a batch's accounts at once); ``current``: what
    ``order_holds`` returned for the orders, when the caller read it under those locks.
    ``fresh``: the caller created the orders in this transaction, so nothing can have
    been posted or held for them yet (the order service's placement)."""
    name = cause if callable(cause) else lambda _: cause
    entries_keys = {o.pk: f"order:{o.pk}:{name(o)}" for o in orders}
    keys = {
        order.pk: (
            trader_account_key(
                LedgerAccountKind.AVAILABLE, order_hold_asset_id(order), order.account_id
            ),
            trader_account_key(
                LedgerAccountKind.HELD, order_hold_asset_id(order), order.account_id
            ),
        )
        for order in orders
    }
    if accounts is None or not all(k in accounts for pair in keys.values() for k in pair):
        accounts = ledger_accounts_lock_keys(k for pair in keys.values() for k in pair)
    # Read only once the accounts are locked: a concurrent retry of the same move has
    # committed by now (and is seen), and nothing else can move these holds.
    if fresh:
        current = {}
    else:
        already = posted_keys(entries_keys.values())
        orders = [o for o in orders if entries_keys[o.pk] not in already]
    if current is None:
        current = order_holds(o.pk for o in orders)

    entries = []
    # What each available balance will be once the moves before it are posted, so
    # several orders of one trader in one call are checked together.
    projected: dict[int, Decimal] = {}
    for order in orders:
        delta = order_hold_required(order) - current.get(order.pk, ZERO)
        if not delta:
            continue
        available, held_account = (accounts[k] for k in keys[order.pk])
        balance = projected.get(available.pk, available.balance)
        if delta > balance:
            raise InsufficientFunds(
                f"insufficient {_asset_symbol(order)}: {delta} needed, {balance} available"
            )
        projected[available.pk] = balance - delta
        entries.append(
            Entry(
                kind=kind if delta > 0 else TransactionKind.RELEASE,
                idempotency_key=entries_keys[order.pk],
                order_id=order.pk,
                legs=[Leg(available, -delta), Leg(held_account, delta, order_id=order.pk)],
            )
        )
    return entries_post(entries)


def hold_increase(*, order: Order, amount: Decimal, cause: str) -> Sequence[LedgerTransaction]:
    """Hold ``amount`` more for ``order`` — an amend that enlarges it, held before the
    amended order can trade. Call inside a transaction; raises ``InsufficientFunds``."""
    asset = order_hold_asset_id(order)
    keys = [
        trader_account_key(LedgerAccountKind.AVAILABLE, asset, order.account_id),
        trader_account_key(LedgerAccountKind.HELD, asset, order.account_id),
    ]
    accounts = ledger_accounts_lock_keys(keys)
    available, held = (accounts[k] for k in keys)
    key = f"order:{order.pk}:{cause}"
    if key in posted_keys([key]):
        return []
    require_available(available, amount, _asset_symbol(order))
    return entries_post(
        [
            Entry(
                kind=TransactionKind.HOLD,
                idempotency_key=key,
                order_id=order.pk,
                legs=[Leg(available, -amount), Leg(held, amount, order_id=order.pk)],
            )
        ]
    )


def _asset_symbol(order: Order) -> str:
    market = order.market
    return market.quote.symbol if order.side == Side.BUY else market.base.symbol


# Without a savepoint of its own (two round trips for every order placed): a failure
# here is the caller's transaction's failure, and a refusal writes nothing to undo.
@transaction.atomic(savepoint=False)
def hold_place(
    *, order: Order, cause: str = "placed", fresh: bool = False
) -> LedgerTransaction | None:
    """Reserve what ``order`` may cost, moving it from available to held. Joins the
    caller's transaction (the order service writes order, command and hold together).
    Raises ``InsufficientFunds`` and posts nothing when the trader cannot cover it.
    ``fresh``: the order was created in this transaction (see ``holds_sync_many``)."""
    posted = holds_sync_many([order], kind=TransactionKind.HOLD, cause=cause, fresh=fresh)
    return posted[0] if posted else None


@transaction.atomic
def hold_release(*, order: Order, cause: str | None = None) -> LedgerTransaction | None:
    """Give back what ``order`` no longer needs — all of it once it is finished
    (``cause`` defaults to ``final`` then; a live order's release must name its
    cause). Joins the caller's transaction."""
    if cause is None:
        if not order.is_terminal:
            raise LedgerError(f"order {order.pk} is live: name the cause of the release")
        cause = "final"
    if order_hold_required(order) > order_holds([order.pk]).get(order.pk, ZERO):
        raise LedgerError(f"order {order.pk} needs more held, not less: use hold_place")
    posted = holds_sync_many([order], kind=TransactionKind.RELEASE, cause=cause)
    return posted[0] if posted else None


# --------------------------------------------------------------------------------------
# Settling fills
# --------------------------------------------------------------------------------------


def _trade_entry(trade: Trade, accounts: dict[AccountKey, LedgerAccount]) -> Entry:
    market = trade.market
    base, quote = market.base_id, market.quote_id
    buyer_is_taker = trade.aggressor_side == Side.BUY
    buy_order = trade.taker_order if buyer_is_taker else trade.maker_order
    sell_order = trade.maker_order if buyer_is_taker else trade.taker_order
    buyer_fee = trade.taker_fee if buyer_is_taker else trade.maker_fee
    seller_fee = trade.maker_fee if buyer_is_taker else trade.taker_fee
    buyer_remaining = trade.taker_remaining if buyer_is_taker else trade.maker_remaining
    notional = trade.quote_quantity

    consumed = buy_fill_consumes(
        buy_order,
        quantity=trade.quantity,
        remaining_after=buyer_remaining,
        notional=notional,
        fee=buyer_fee,
    )
    refund = consumed - notional - buyer_fee
    if refund < 0:
        raise LedgerError(f"trade {trade.pk} costs the buyer more than order {buy_order.pk} holds")

    def acct(kind: str, asset: int, owner: int) -> LedgerAccount:
        return accounts[trader_account_key(kind, asset, owner)]

    A, H = LedgerAccountKind.AVAILABLE, LedgerAccountKind.HELD
    return Entry(
        kind=TransactionKind.TRADE,
        idempotency_key=f"trade:{trade.pk}",
        trade_id=trade.pk,
        legs=[
            # quote: the buyer's hold pays the seller and the fees; leftovers return
            Leg(acct(H, quote, trade.buyer_id), -consumed, order_id=buy_order.pk),
            Leg(acct(A, quote, trade.buyer_id), refund),
            Leg(acct(A, quote, trade.seller_id), notional - seller_fee),
            Leg(accounts[fee_account_key(quote, market.pk)], buyer_fee + seller_fee),
            # base: the seller's hold goes to the buyer
            Leg(acct(H, base, trade.seller_id), -trade.quantity, order_id=sell_order.pk),
            Leg(acct(A, base, trade.buyer_id), trade.quantity),
        ],
    )


def trade_account_keys(trade: Trade) -> list[AccountKey]:
    market = trade.market
    A, H = LedgerAccountKind.AVAILABLE, LedgerAccountKind.HELD
    return [
        trader_account_key(H, market.quote_id, trade.buyer_id),
        trader_account_key(A, market.quote_id, trade.buyer_id),
        trader_account_key(A, market.quote_id, trade.seller_id),
        fee_account_key(market.quote_id, market.pk),
        trader_account_key(H, market.base_id, trade.seller_id),
        trader_account_key(A, market.base_id, trade.buyer_id),
    ]


def trade_settle_many(
    *,
    trades: Sequence[Trade],
    accounts: dict[AccountKey, LedgerAccount] | None = None,
    fresh: bool = False,
) -> Sequence[LedgerTransaction]:
    """Settle fills: for each, release the buyer's and seller's holds for the filled
    part, pay the seller, deliver the base to the buyer, book both fees, and return
    the buyer's price improvement and unused fee reserve to available, and move both
    traders' positions and day statistics (``positions_apply``). Trades already
    settled are skipped (idempotent). Call inside a transaction — the matcher's batch
    — with ``market``, ``maker_order`` and ``taker_order`` loaded on each trade.
    ``accounts``: every account of ``trade_account_keys``, when the caller has locked
    them already. ``fresh``: the caller inserted the trades in this transaction, so
    none can have been settled before (the matcher's batch)."""
    if not trades:
        return []
    keys = [k for t in trades for k in trade_account_keys(t)]
    if accounts is None or not all(k in accounts for k in keys):
        accounts = ledger_accounts_lock_keys(keys)
    # Checked under the locks, so a concurrent settlement of the same fill is seen.
    already = set() if fresh else posted_keys(f"trade:{t.pk}" for t in trades)
    todo = [t for t in trades if f"trade:{t.pk}" not in already]
    if not todo:
        return []
    posted = entries_post([_trade_entry(trade, accounts) for trade in todo])
    # In the settling transaction and only for the fills it settles: positions and
    # statistics move exactly once per trade, and never without the money.
    positions_apply(trades=todo)
    # The matcher writes its trades SETTLED in the transaction that settles them; a
    # trade settled later (a replay, a repair) is marked here.
    unmarked = [t.pk for t in todo if t.settlement_status != SettlementStatus.SETTLED]
    if unmarked:
        Trade.objects.filter(pk__in=unmarked).exclude(
            settlement_status=SettlementStatus.SETTLED
        ).update(settlement_status=SettlementStatus.SETTLED, settled_at=timezone.now())
    return posted


@transaction.atomic(durable=True)
def trade_settle(*, trade: Trade) -> LedgerTransaction | None:
    """Settle one fill in its own transaction (see ``trade_settle_many``)."""
    posted = trade_settle_many(trades=trades_for_settlement([trade.pk]))
    return posted[0] if posted else None


def trades_for_settlement(trade_ids: Iterable[int]) -> list[Trade]:
    return list(
        Trade.objects.filter(pk__in=list(trade_ids))
        .select_related("market", "maker_order", "taker_order")
        .order_by("pk")
    )
