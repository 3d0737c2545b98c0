"""Archiving finished orders.

An order row cannot leave ``exchange_order``: trades, hold postings, ledger
transactions, the command journal and the status history all reference it by foreign
key and are append-only, and the order table refuses deletes (``protect_delete``).
Deleting would mean rewriting history, which is exactly what those triggers exist to
stop. So archiving copies each order that has been terminal for long enough into
``exchange_orderarchive`` (same columns), in one ``INSERT … SELECT``, once: the archive
is what cold storage and long-range reports read, and the order row stays as the
target of its history's foreign keys. The matcher never notices either way, since its
indexes on orders are partial (live statuses only). See ``OrderArchive``.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction

from exchange.models import TERMINAL_STATUSES, Order, OrderArchive


def _columns() -> tuple[list[str], list[str]]:
    """(archive columns, order columns) in matching order: every column of the order,
    its id as the archive's ``order_id``."""
    source = [field.column for field in Order._meta.concrete_fields]
    target = ["order_id" if column == "id" else column for column in source]
    return target, source


@transaction.atomic(durable=True)
def orders_archive(*, done_before: datetime, limit: int) -> int:
    """Archive up to ``limit`` orders that reached a terminal state before
    ``done_before`` and are not archived yet, oldest id first; returns how many."""
    target, source = _columns()
    archive, order = OrderArchive._meta.db_table, Order._meta.db_table
    sql = f"""
        INSERT INTO {archive} ({", ".join(f'"{c}"' for c in target)})
        SELECT {", ".join(f'o."{c}"' for c in source)}
          FROM {order} o
         WHERE o.status = ANY(%(statuses)s) AND o.done_at < %(before)s
           AND NOT EXISTS (SELECT 1 FROM {archive} a WHERE a.order_id = o.id)
         ORDER BY o.id
         LIMIT %(limit)s
        ON CONFLICT (order_id) DO NOTHING
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {"statuses": list(TERMINAL_STATUSES), "before": done_before, "limit": limit},
        )
        return cursor.rowcount
