"""A signed amend's nonce is used once per account (see ``exchange.signing``).

The unique index is built concurrently: the journal is the platform's longest table, and
a plain CREATE INDEX would hold every order placement back while it reads all of it.
Amends journalled before signed amends carry no nonce and are outside the index.
"""

import django.db.models.fields.json
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("exchange", "0018_maker_fee_within_taker_fee"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddConstraint(
                    model_name="ordercommand",
                    constraint=models.UniqueConstraint(
                        models.F("account"),
                        django.db.models.fields.json.KeyTextTransform("nonce", "payload"),
                        condition=models.Q(("kind", "AMEND"), ("payload__has_key", "nonce")),
                        name="ordercommand_unique_amend_nonce",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ordercommand_unique_amend_nonce"
                    " ON exchange_ordercommand (account_id, ((payload ->> 'nonce')))"
                    " WHERE kind = 'AMEND' AND payload ? 'nonce'",
                    reverse_sql="DROP INDEX CONCURRENTLY IF EXISTS ordercommand_unique_amend_nonce",
                ),
            ],
        ),
    ]
