"""A maker pays at most what a taker pays, in the database as in the rules checks: a
resting buy holds for its fee at the taker rate, and pays the maker rate when filled, so
a higher maker rate left it short of what its fill costs."""

import django.db.models.expressions
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0018_maker_fee_within_taker_fee"),
        ("portfolio", "0011_balances_trigger_planned_by_index"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="feetier",
            name="feetier_rates",
        ),
        migrations.AddConstraint(
            model_name="feetier",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "maker_fee_rate__gte",
                        django.db.models.expressions.CombinedExpression(
                            models.F("taker_fee_rate"), "*", models.Value(-1)
                        ),
                    ),
                    ("maker_fee_rate__lte", models.F("taker_fee_rate")),
                    ("taker_fee_rate__gte", 0),
                ),
                name="feetier_rates",
            ),
        ),
    ]
