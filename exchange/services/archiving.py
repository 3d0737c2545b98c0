"""Archiving finished orders: moving them out of the live order table.

An order that reached a terminal state more than ``ORDER_ARCHIVE_AFTER_DAYS`` ago moves
from ``exchange_order`` to ``exchange_orderarchive`` with every column as it was: one
``INSERT … SELECT`` copies a batch, one ``DELETE`` removes the same rows, in one
transaction. The live table then holds recent and open orders only, which is what the
order path, the matcher's rebuild and the trader API read.

History stays whole. Trades, the command journal, status history and the ledger keep
naming the order by id, and the database guarantees the id resolves in one of the two
tables (``exchange.models.order_references_check``): the live table refuses to delete
an order whose final state is not in the archive (``delete_only_archived``), and the
archive never deletes or changes a row. An archived order's nonce, hash and client
order id stay taken, so an old signed order cannot be replayed. See ``OrderArchive``.
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
    """Move up to ``limit`` orders that reached a terminal state before ``done_before``
    to the archive, oldest id first; returns how many moved.

    The rows are locked as they are copied, so a concurrent archiving run skips them
    instead of copying them twice; a terminal order is never written again, so nothing
    else waits on the locks."""
    target, source = _columns()
    archive, order = OrderArchive._meta.db_table, Order._meta.db_table
    sql = f"""
        WITH batch AS (
            SELECT o.id FROM {order} o
             WHERE o.status = ANY(%(statuses)s) AND o.done_at < %(before)s
               -- an order done before then was placed before then: the BRIN index
               -- on created_at narrows the scan to the old part of the table
               AND o.created_at < %(before)s
             ORDER BY o.id
             LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED
        )
        INSERT INTO {archive} ({", ".join(f'"{c}"' for c in target)})
        SELECT {", ".join(f'o."{c}"' for c in source)}
          FROM {order} o JOIN batch USING (id)
        RETURNING order_id
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {"statuses": list(TERMINAL_STATUSES), "before": done_before, "limit": limit},
        )
        moved = [row[0] for row in cursor.fetchall()]
        if moved:
            cursor.execute(f"DELETE FROM {order} WHERE id = ANY(%s)", [moved])
    return len(moved)
