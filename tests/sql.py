"""Raw SQL in tests that try to break the database's rules."""

from contextlib import contextmanager

import pytest
from django.db import DatabaseError, connection, transaction


def sql(statement: str, params: list | tuple = ()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@contextmanager
def refused(rule: str):
    """Expect PostgreSQL to refuse what the block does, naming ``rule``. The savepoint
    keeps the test's transaction usable afterwards."""
    with pytest.raises(DatabaseError, match=rule), transaction.atomic():
        yield
