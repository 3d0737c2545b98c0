"""Row locks for money. Always taken in primary-key order, so two transactions that
touch the same accounts queue instead of deadlocking. Querysets are evaluated here:
a lazy ``select_for_update`` takes no lock."""

from collections.abc import Iterable

from portfolio.models import LedgerAccount, LedgerAdjustment, VaultOperation


def ledger_accounts_lock(ids: Iterable[int]) -> dict[int, LedgerAccount]:
    accounts = list(
        LedgerAccount.objects.filter(pk__in=set(ids)).order_by("pk").select_for_update(of=("self",))
    )
    return {account.pk: account for account in accounts}


def vault_operation_lock(pk: int) -> VaultOperation:
    return VaultOperation.objects.select_for_update(of=("self",)).get(pk=pk)


def adjustment_lock(pk: int) -> LedgerAdjustment:
    return LedgerAdjustment.objects.select_for_update(of=("self",)).get(pk=pk)
