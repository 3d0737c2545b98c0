"""Proof that the books are right, recomputed from first principles.

``ledger_check()`` returns every difference it finds (an empty list means the books
are sound):

1. every asset's ledger accounts sum to zero (money is neither created nor lost);
2. every ledger transaction balances per asset;
3. every ledger account's balance equals the sum of its postings;
4. no trader or fee balance is negative, no vault balance positive;
5. each trader's held balance equals the holds of their orders plus their pending
   withdrawals;
6. each order holds exactly its worst-case remaining cost, in the asset it pays with
   (nothing for a finished order: no money left locked);
7. each trader's position in a market's base is what their settled trades there
   bought minus what they sold (plus what they sold beyond the position, see
   ``Position``), over as many trades, and their daily statistics add up to the same
   trades, bought and sold each; every position is in a market;
8. each settled trade's ledger transaction moves exactly what the trade says: its
   quantity from the seller's hold to the buyer, its notional and the buyer's fee out
   of the buyer's quote, the notional less the seller's fee to the seller, both fees
   to the market's fee account — and each fee account holds the fees of its market's
   settled trades;
9. money enters and leaves only through the vault and staff adjustments: each asset's
   vault account is its completed withdrawals less its deposits, its adjustment
   account the negated sum of its posted adjustments.

PostgreSQL already refuses most of this; the check proves it for data that reached
the tables any other way (a restore, a replica, a manual repair).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.db.models import Sum

from exchange.models import LIVE_STATUSES, Order, OrderStatus
from portfolio.holds import ZERO, order_hold_asset_id, order_hold_required
from portfolio.models import (
    PENDING_WITHDRAWAL_STATUSES,
    LedgerAccount,
    LedgerAccountKind,
    Posting,
    VaultOperation,
    VaultOperationKind,
)


@dataclass(frozen=True, slots=True)
class Discrepancy:
    rule: str
    subject: str
    expected: Decimal | None
    actual: Decimal | None

    def __str__(self) -> str:
        if self.expected is None:
            return f"{self.rule}: {self.subject}"
        return (
            f"{self.rule}: {self.subject}: expected {self.expected}, found {self.actual} "
            f"(off by {self.actual - self.expected})"
        )


def _rows(sql: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def ledger_check() -> list[Discrepancy]:
    found: list[Discrepancy] = []

    for asset, total in _rows(
        "SELECT s.symbol, sum(a.balance) FROM portfolio_ledgeraccount a "
        "JOIN exchange_asset s ON s.id = a.asset_id GROUP BY s.symbol HAVING sum(a.balance) <> 0"
    ):
        found.append(Discrepancy("asset does not sum to zero", asset, ZERO, total))

    for txn, asset, total in _rows(
        "SELECT p.transaction_id, s.symbol, sum(p.amount) FROM portfolio_posting p "
        "JOIN portfolio_ledgeraccount a ON a.id = p.ledger_account_id "
        "JOIN exchange_asset s ON s.id = a.asset_id "
        "GROUP BY p.transaction_id, s.symbol HAVING sum(p.amount) <> 0"
    ):
        found.append(
            Discrepancy("transaction does not balance", f"transaction {txn} {asset}", ZERO, total)
        )

    for account, balance, posted in _rows(
        "SELECT a.id, a.balance, coalesce(sum(p.amount), 0) FROM portfolio_ledgeraccount a "
        "LEFT JOIN portfolio_posting p ON p.ledger_account_id = a.id "
        "GROUP BY a.id HAVING a.balance <> coalesce(sum(p.amount), 0)"
    ):
        found.append(
            Discrepancy("balance is not its postings", f"ledger account {account}", posted, balance)
        )

    for account in LedgerAccount.objects.filter(
        kind__in=[
            LedgerAccountKind.AVAILABLE,
            LedgerAccountKind.HELD,
            LedgerAccountKind.FEE_REVENUE,
        ],
        balance__lt=0,
    ):
        found.append(Discrepancy("negative balance", str(account), ZERO, account.balance))
    for account in LedgerAccount.objects.filter(kind=LedgerAccountKind.VAULT, balance__gt=0):
        found.append(Discrepancy("vault balance above zero", str(account), ZERO, account.balance))

    found += _held_matches_orders_and_withdrawals()
    found += _orders_hold_their_worst_case()
    found += _positions_match_trades()
    found += _trades_settled_as_their_terms()
    found += _fee_revenue_is_fees_of_trades()
    found += _venue_accounts_match_operations()
    return found


def _held_matches_orders_and_withdrawals() -> list[Discrepancy]:
    expected: dict[tuple[int, int], Decimal] = defaultdict(lambda: ZERO)
    for owner, asset, held in (
        Posting.objects.filter(order__isnull=False)
        .values_list("ledger_account__owner_id", "ledger_account__asset_id")
        .annotate(held=Sum("amount"))
    ):
        expected[(owner, asset)] += held
    for owner, asset, amount in (
        VaultOperation.objects.filter(
            kind=VaultOperationKind.WITHDRAWAL, status__in=PENDING_WITHDRAWAL_STATUSES
        )
        .values_list("account_id", "asset_id")
        .annotate(amount=Sum("amount"))
    ):
        expected[(owner, asset)] += amount

    found = []
    actual = {
        (owner, asset): balance
        for owner, asset, balance in LedgerAccount.objects.filter(
            kind=LedgerAccountKind.HELD
        ).values_list("owner_id", "asset_id", "balance")
    }
    for key in expected.keys() | actual.keys():
        want, have = expected.get(key, ZERO), actual.get(key, ZERO)
        if want != have:
            found.append(
                Discrepancy(
                    "held is not open orders plus pending withdrawals",
                    f"account {key[0]} asset {key[1]}",
                    want,
                    have,
                )
            )
    return found


def _orders_hold_their_worst_case() -> list[Discrepancy]:
    # Per asset: a hold booked in another asset than the order pays with is no hold.
    holds: dict[int, dict[int, Decimal]] = defaultdict(dict)
    for order, asset, held in (
        Posting.objects.filter(order__isnull=False)
        .values_list("order_id", "ledger_account__asset_id")
        .annotate(held=Sum("amount"))
    ):
        if held:
            holds[order][asset] = held
    live = [*LIVE_STATUSES, OrderStatus.PENDING]
    to_check = Order.objects.filter(status__in=live) | Order.objects.filter(pk__in=list(holds))
    found = []
    for order in to_check.select_related("market").iterator(chunk_size=2000):
        held = holds.pop(order.pk, {})
        asset = order_hold_asset_id(order)
        want, have = order_hold_required(order), held.pop(asset, ZERO)
        if want != have:
            found.append(
                Discrepancy(
                    "order does not hold its worst-case cost",
                    f"order {order.pk} ({order.status}, asset {asset})",
                    want,
                    have,
                )
            )
        for other, amount in sorted(held.items()):
            found.append(
                Discrepancy(
                    "order holds an asset it does not pay with",
                    f"order {order.pk} ({order.status}, asset {other})",
                    ZERO,
                    amount,
                )
            )
    # Left: orders that hold money but are not in the live table. Archiving moves only
    # finished orders, whose holds were released, so there should be none.
    for pk, held in sorted(holds.items()):
        for asset, amount in sorted(held.items()):
            found.append(
                Discrepancy(
                    "order in the archive still holds funds",
                    f"order {pk} asset {asset}",
                    ZERO,
                    amount,
                )
            )
    return found


_POSITIONS_VS_TRADES = """
WITH sides AS (
    SELECT buyer_id AS account_id, market_id, quantity AS bought, 0 AS sold
      FROM exchange_trade WHERE settlement_status = 'SETTLED'
    UNION ALL
    SELECT seller_id, market_id, 0, quantity
      FROM exchange_trade WHERE settlement_status = 'SETTLED'
), traded AS (
    SELECT account_id, market_id, sum(bought) AS bought, sum(sold) AS sold, count(*) AS n
      FROM sides GROUP BY account_id, market_id
), positions AS (
    SELECT p.account_id, m.id AS market_id, p.asset_id, p.quote_id,
           p.quantity - p.excess_sold AS net, p.trade_count AS n
      FROM portfolio_position p
      LEFT JOIN exchange_market m ON m.base_id = p.asset_id AND m.quote_id = p.quote_id
), stats AS (
    SELECT account_id, market_id, sum(buy_volume) AS bought, sum(sell_volume) AS sold,
           sum(trade_count) AS n
      FROM portfolio_tradingstats GROUP BY account_id, market_id
)
SELECT account_id, market_id, p.asset_id, p.quote_id,
       coalesce(t.bought, 0), coalesce(t.sold, 0), coalesce(t.n, 0),
       coalesce(p.net, 0), coalesce(p.n, 0),
       coalesce(s.bought, 0), coalesce(s.sold, 0), coalesce(s.n, 0)
  FROM traded t
  FULL JOIN positions p USING (account_id, market_id)
  FULL JOIN stats s USING (account_id, market_id)
 WHERE market_id IS NULL  -- a position whose pair is no market: nothing traded it
    OR coalesce(t.bought, 0) - coalesce(t.sold, 0) <> coalesce(p.net, 0)
    OR coalesce(t.n, 0) <> coalesce(p.n, 0)
    OR coalesce(t.bought, 0) <> coalesce(s.bought, 0)
    OR coalesce(t.sold, 0) <> coalesce(s.sold, 0)
    OR coalesce(t.n, 0) <> coalesce(s.n, 0)
"""


def _positions_match_trades() -> list[Discrepancy]:
    found = []
    for (
        account,
        market,
        asset,
        quote,
        bought,
        sold,
        trades,
        position,
        position_trades,
        stats_bought,
        stats_sold,
        stats_trades,
    ) in _rows(_POSITIONS_VS_TRADES):
        if market is None:
            found.append(
                Discrepancy(
                    "position is in no market",
                    f"account {account} asset {asset} quote {quote} "
                    f"({position} net over {position_trades} trades)",
                    None,
                    None,
                )
            )
            continue
        subject = f"account {account} market {market}"
        net = bought - sold
        if net != position or trades != position_trades:
            found.append(
                Discrepancy(
                    "position is not its trades (net quantity; trade count "
                    f"{trades} vs {position_trades})",
                    subject,
                    net,
                    position,
                )
            )
        # Each side on its own: a round trip booked twice moves both, not the net.
        for measure, want, have in (
            ("bought", bought, stats_bought),
            ("sold", sold, stats_sold),
            ("trade count", Decimal(trades), Decimal(stats_trades)),
        ):
            if want != have:
                found.append(
                    Discrepancy(
                        f"trading statistics are not their trades ({measure})",
                        subject,
                        want,
                        have,
                    )
                )
    return found


# Each settled trade's TRADE transaction, leg by leg, against what ``_trade_entry``
# posts for it. The buyer's quote is taken whole (held and available together): how it
# splits between the hold used up and the refund is the hold's arithmetic, and the
# order's hold rule proves that. A settled trade without its transaction, a second
# transaction for one trade, or a leg to any other account shows as a difference.
_TRADES_VS_SETTLEMENT = """
WITH legs AS (
    SELECT t.id AS trade_id,
           CASE
               WHEN a.asset_id = m.base_id AND a.kind = 'AVAILABLE'
                    AND a.owner_id = t.buyer_id THEN 'base to the buyer'
               WHEN a.asset_id = m.base_id AND a.kind = 'HELD'
                    AND a.owner_id = t.seller_id THEN 'base from the seller'
               WHEN a.asset_id = m.quote_id AND a.kind IN ('AVAILABLE', 'HELD')
                    AND a.owner_id = t.buyer_id THEN 'quote from the buyer'
               WHEN a.asset_id = m.quote_id AND a.kind = 'AVAILABLE'
                    AND a.owner_id = t.seller_id THEN 'quote to the seller'
               WHEN a.asset_id = m.quote_id AND a.kind = 'FEE_REVENUE'
                    AND a.market_id = m.id THEN 'fees'
               ELSE 'ledger account ' || a.id
           END AS leg,
           sum(p.amount) AS amount
      FROM portfolio_ledgertransaction lt
      JOIN exchange_trade t ON t.id = lt.trade_id
      JOIN exchange_market m ON m.id = t.market_id
      JOIN portfolio_posting p ON p.transaction_id = lt.id
      JOIN portfolio_ledgeraccount a ON a.id = p.ledger_account_id
     WHERE lt.kind = 'TRADE'
     GROUP BY 1, 2
), terms AS (
    SELECT t.id AS trade_id, e.leg, e.amount
      FROM exchange_trade t,
           LATERAL (SELECT CASE WHEN t.aggressor_side = 'BUY' THEN t.taker_fee
                                ELSE t.maker_fee END AS buyer_fee,
                           CASE WHEN t.aggressor_side = 'BUY' THEN t.maker_fee
                                ELSE t.taker_fee END AS seller_fee) f,
           LATERAL (VALUES ('base to the buyer', t.quantity),
                           ('base from the seller', -t.quantity),
                           ('quote from the buyer', -(t.quote_quantity + f.buyer_fee)),
                           ('quote to the seller', t.quote_quantity - f.seller_fee),
                           ('fees', f.buyer_fee + f.seller_fee)) AS e(leg, amount)
     WHERE t.settlement_status = 'SETTLED'
)
SELECT trade_id, leg, coalesce(e.amount, 0), coalesce(l.amount, 0)
  FROM terms e
  FULL JOIN legs l USING (trade_id, leg)
 WHERE coalesce(e.amount, 0) <> coalesce(l.amount, 0)
 ORDER BY trade_id, leg
"""


def _trades_settled_as_their_terms() -> list[Discrepancy]:
    return [
        Discrepancy("trade is not settled as its terms say", f"trade {trade} {leg}", want, have)
        for trade, leg, want, have in _rows(_TRADES_VS_SETTLEMENT)
    ]


# Fees reach a fee account only by settling trades: each market's, in its quote, holds
# exactly the fees (net of maker rebates) of the market's settled trades.
_FEE_REVENUE_VS_TRADES = """
WITH earned AS (
    SELECT t.market_id, m.quote_id AS asset_id, sum(t.maker_fee + t.taker_fee) AS fees
      FROM exchange_trade t JOIN exchange_market m ON m.id = t.market_id
     WHERE t.settlement_status = 'SETTLED'
     GROUP BY t.market_id, m.quote_id
), booked AS (
    SELECT market_id, asset_id, balance AS fees
      FROM portfolio_ledgeraccount WHERE kind = 'FEE_REVENUE'
)
SELECT market_id, asset_id, coalesce(e.fees, 0), coalesce(b.fees, 0)
  FROM earned e
  FULL JOIN booked b USING (market_id, asset_id)
 WHERE coalesce(e.fees, 0) <> coalesce(b.fees, 0)
 ORDER BY market_id, asset_id
"""


def _fee_revenue_is_fees_of_trades() -> list[Discrepancy]:
    return [
        Discrepancy(
            "fee revenue is not the fees of settled trades",
            f"market {market} asset {asset}",
            earned,
            booked,
        )
        for market, asset, earned, booked in _rows(_FEE_REVENUE_VS_TRADES)
    ]


# The books balancing proves no money was made from nothing only if the accounts money
# comes from are themselves accounted for: the vault mirrors the chain (credited by a
# completed deposit, debited by a completed withdrawal), and the adjustment account
# answers for every posted four-eyes adjustment (its amount credits the trader).
_VENUE_ACCOUNTS_VS_OPERATIONS = """
WITH justified AS (
    SELECT 'VAULT' AS kind, v.asset_id,
           sum(CASE WHEN v.kind = 'WITHDRAWAL' THEN v.amount ELSE -v.amount END) AS balance
      FROM portfolio_vaultoperation v
     WHERE v.status = 'COMPLETED'
     GROUP BY v.asset_id
    UNION ALL
    SELECT 'ADJUSTMENT', j.asset_id, -sum(j.amount)
      FROM portfolio_ledgeradjustment j
     WHERE j.status = 'POSTED'
     GROUP BY j.asset_id
), booked AS (
    SELECT kind, asset_id, balance
      FROM portfolio_ledgeraccount WHERE kind IN ('VAULT', 'ADJUSTMENT')
)
SELECT kind, asset_id, coalesce(j.balance, 0), coalesce(b.balance, 0)
  FROM justified j
  FULL JOIN booked b USING (kind, asset_id)
 WHERE coalesce(j.balance, 0) <> coalesce(b.balance, 0)
 ORDER BY kind, asset_id
"""

_VENUE_ACCOUNT_RULES = {
    LedgerAccountKind.VAULT: "vault is not its completed deposits and withdrawals",
    LedgerAccountKind.ADJUSTMENT: "adjustment account is not its posted adjustments",
}


def _venue_accounts_match_operations() -> list[Discrepancy]:
    return [
        Discrepancy(_VENUE_ACCOUNT_RULES[kind], f"asset {asset}", justified, booked)
        for kind, asset, justified, booked in _rows(_VENUE_ACCOUNTS_VS_OPERATIONS)
    ]
