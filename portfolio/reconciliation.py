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
