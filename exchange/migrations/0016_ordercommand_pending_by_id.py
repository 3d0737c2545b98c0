"""A second pending-command index, keyed by id, then market (see ``OrderCommand.Meta``),
and autovacuum for the journal after a fixed number of rows changed.

The index is built concurrently: the journal is the platform's longest table, and a
plain CREATE INDEX would hold every order placement back while it reads all of it.

Autovacuum's defaults wait for a fraction of the table (10% changed to analyse, 20% dead
to vacuum): on a journal of ten million commands that is a million done before its
statistics learn that a backlog is gone, or its pending-command indexes are cleared of
the dead entries the backlog left. With a fixed 1,000 rows and no fraction, a busy
journal is analysed and vacuumed on each of autovacuum's rounds (a minute apart by
default), and a small one as often as before.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("exchange", "0015_trade_parties_check_planned_by_index"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="ordercommand",
            index=models.Index(
                condition=models.Q(("status", "PENDING")),
                fields=["id", "market"],
                name="ordercommand_pending_by_id",
            ),
        ),
        migrations.RunSQL(
            "ALTER TABLE exchange_ordercommand SET ("
            " autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 1000,"
            " autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000)",
            reverse_sql="ALTER TABLE exchange_ordercommand RESET ("
            " autovacuum_analyze_scale_factor, autovacuum_analyze_threshold,"
            " autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold)",
        ),
    ]
