"""Who may see what, in one place: every trader-facing queryset goes through
:func:`for_account`, so no view filters by owner itself.

PostgreSQL backs it up: the read endpoints run their queries under the ``dex_api``
role with the caller's account id set for the transaction (``dex.api.rls``), and
row-level security policies on the same tables return only that account's rows even
to a query that forgot this filter.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from exchange.models import Account, Order, OrderArchive, Trade
from portfolio.models import (
    Balance,
    LedgerAccount,
    PortfolioSnapshot,
    Position,
    Posting,
    TradingStats,
    VaultOperation,
)

# How each protected model reaches its owner.
_OWNER_FILTERS = {
    Order: lambda account: Q(account=account),
    OrderArchive: lambda account: Q(account_id=account.pk),
    Trade: lambda account: Q(buyer=account) | Q(seller=account),
    Balance: lambda account: Q(account=account),
    LedgerAccount: lambda account: Q(owner=account),
    Posting: lambda account: Q(ledger_account__owner=account),
    VaultOperation: lambda account: Q(account=account),
    Position: lambda account: Q(account=account),
    TradingStats: lambda account: Q(account=account),
    PortfolioSnapshot: lambda account: Q(account=account),
}


def for_account(queryset: QuerySet, account: Account) -> QuerySet:
    """``queryset`` narrowed to the rows ``account`` owns."""
    try:
        owner = _OWNER_FILTERS[queryset.model]
    except KeyError:
        raise TypeError(f"{queryset.model.__name__} has no owner rule") from None
    return queryset.filter(owner(account))
