"""Trader reads under PostgreSQL row-level security.

:func:`rls_scope` runs a block in a transaction as the API's database role
(``settings.API_DB_ROLE``) with the caller's account id in the setting
``dex.account_id``. The policies of ``compliance.0002_row_level_security`` show that
role only the account's own orders, trades, ledger accounts, postings, balances and
vault operations, so a query in the block that forgot ``dex.api.scoping.for_account``
still returns only the caller's rows. The role may read and nothing else.

:class:`RowLevelSecurityMixin` puts the handler of every safe (GET, HEAD, OPTIONS)
request of an authenticated trader in that scope. Writes are not wrapped: they go
through services, which run as the tables' owner and need to see and lock every row
(the venue's accounts, the counterparty's order), and which own their transactions.

What the scope hides is invisible rather than forbidden, inner joins included: a query
that joins a trade to the counterparty's order or account (``select_related("buyer")``)
loses the row. Read ``buyer_id``/``seller_id`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from rest_framework.permissions import SAFE_METHODS

from dex.api.authentication import Trader

# ``set_config('role', …, true)`` is ``SET LOCAL ROLE …`` (the same check that the
# session user is a member of the role), and both settings go in one round trip.
_SET = "SELECT set_config('role', %s, true), set_config('dex.account_id', %s, true)"
_CURRENT = "SELECT current_setting('role'), current_setting('dex.account_id', true)"


@contextmanager
def rls_scope(account_id: int) -> Iterator[None]:
    """Run the block in a transaction (a savepoint when one is open) as the API's role,
    seeing only ``account_id``'s rows.

    Both settings are transaction-local. Outermost, they end with the transaction.
    Inside an outer ``atomic`` they would outlast the block (a released savepoint keeps
    its ``SET LOCAL``s until the outer transaction ends), so on the way out the block
    puts back the role and account it found; if the block raises, rolling back to the
    savepoint undoes them.
    """
    connection = connections[DEFAULT_DB_ALIAS]
    nested = connection.in_atomic_block
    with transaction.atomic(using=DEFAULT_DB_ALIAS):
        with connection.cursor() as cursor:
            if nested:
                cursor.execute(_CURRENT)
                previous_role, previous_account = cursor.fetchone()
            cursor.execute(_SET, [settings.API_DB_ROLE, str(int(account_id))])
        yield
        if nested:
            with connection.cursor() as cursor:
                cursor.execute(_SET, [previous_role, previous_account or ""])


class RowLevelSecurityMixin:
    """For DRF views: a trader's safe requests run their handler in
    :func:`rls_scope` for the caller's account.

    Authentication, permissions and throttling run before the scope opens, as the
    owner (an API key's ``last_used_at`` is written then). The scope closes before an
    exception is rendered, rolling back, and otherwise once the response is final.
    """

    def dispatch(self, request, *args, **kwargs):
        self._rls_scope = ExitStack()
        with self._rls_scope:
            return super().dispatch(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        user = request.user
        if request.method in SAFE_METHODS and isinstance(user, Trader):
            self._rls_scope.enter_context(rls_scope(user.account.pk))

    def handle_exception(self, exc):
        # Leave the scope first, so the error is rendered outside a transaction that
        # the error may have broken.
        self._rls_scope.__exit__(type(exc), exc, exc.__traceback__)
        return super().handle_exception(exc)
