"""The archive's orders by market and sequence, so that a rebuilt book numbers its new
orders after every order its market has numbered, archived ones included. Built
concurrently: the archive only grows, and may be large."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("exchange", "0020_order_rules_finished_rows_read_only"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="orderarchive",
            index=models.Index(
                condition=models.Q(("sequence__isnull", False)),
                fields=["market_id", "-sequence"],
                name="orderarchive_market_seq_idx",
            ),
        ),
    ]
