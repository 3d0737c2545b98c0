"""The ledger and the matcher pass whole columns as one array literal."""

from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from portfolio.services.ledger import sql_array


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "cast"),
    [
        (['a"b\\c', None, "x,y {z}", "", "NULL", " padded "], "text"),
        ([Decimal("1E+2"), Decimal("0.00000001"), Decimal("-3.5"), 5, None], "numeric"),
        ([1, 2**62, None], "bigint"),
        ([timezone.now(), None], "timestamptz"),
        ([], "bigint"),
    ],
)
def test_an_array_literal_reads_back_as_the_values(values, cast):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT %s::{cast}[]", [sql_array(values)])
        assert cursor.fetchone()[0] == values
