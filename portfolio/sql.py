"""Passing a column of values to PostgreSQL as one array parameter."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal


def sql_array(values: Iterable) -> str:
    """``values`` as a PostgreSQL array literal, to pass as ONE parameter (cast it in the
    SQL: ``%s::numeric[]``). psycopg adapts a list element by element, which cost the
    matcher more than the statements themselves; ``None`` is NULL, strings are quoted."""
    values = list(values)
    # A column is of one type: numbers without NULLs (the common case) go at C speed.
    if values and None not in values and type(values[0]) in _NUMBERS:
        return "{" + ",".join(map(str, values)) + "}"
    return "{" + ",".join(map(_array_item, values)) + "}"


_NUMBERS = (int, Decimal)


def _array_item(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int | Decimal):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'  # text, times
