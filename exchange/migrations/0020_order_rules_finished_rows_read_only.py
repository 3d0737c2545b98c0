"""Orders the matcher would refuse cannot be written, and finished rows are history.

- Market types are IOC, and post-only is for LIMIT orders only, as the engine has it.
- An order's maker rate is at most its taker rate, as a market's and a fee tier's are.
- An order's average price is its filled quote over its filled quantity, to 8 places.
- A finished order (FILLED, CANCELLED, REJECTED, EXPIRED) and a DONE command are never
  updated again.

Orders that finished before the first two rules held keep what they were (some were
accepted FOK or post-only and rejected by the matcher, some were placed while a market
charged makers more): the rules hold for every order that is not finished, and finished
orders cannot change. A live order that breaks one (a FOK market order not yet
matched, an untriggered FOK stop-market buy, a post-only stop or take-profit limit not
yet answered, an order still resting at a maker rate above its taker rate) fails the
migration, which then changes nothing: let the matcher
answer it or cancel it, and run it again. Every average price the matcher wrote passes
its check.
"""

from decimal import Decimal

import django.db.models.expressions
import django.db.models.functions.math
import django.db.models.lookups
import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0019_signed_amend_nonce"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="order",
            name="order_fill_totals_consistent",
        ),
        migrations.RemoveConstraint(
            model_name="order",
            name="order_post_only_rests",
        ),
        migrations.RemoveConstraint(
            model_name="order",
            name="order_market_types_do_not_rest",
        ),
        migrations.RemoveConstraint(
            model_name="order",
            name="order_fee_rates",
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="order",
            trigger=pgtrigger.compiler.Trigger(
                name="finished_read_only",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    condition="WHEN (OLD.\"status\" IN ('FILLED', 'CANCELLED', 'REJECTED', 'EXPIRED'))",
                    func="RAISE EXCEPTION 'pgtrigger: Cannot update order %: it is %, and read-only', OLD.id, OLD.status; RETURN NULL;",
                    hash="a48cb2d469807a87d5d419e90b818b25073b9f61",
                    operation="UPDATE",
                    pgid="pgtrigger_finished_read_only_2b77b",
                    table="exchange_order",
                    when="BEFORE",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="ordercommand",
            trigger=pgtrigger.compiler.Trigger(
                name="finished_read_only",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    condition="WHEN (OLD.\"status\" IN ('DONE'))",
                    func="RAISE EXCEPTION 'pgtrigger: Cannot update command %: it is %, and read-only', OLD.id, OLD.status; RETURN NULL;",
                    hash="a75603c47a2063b40b4dd93e1e4e7144d4002c2f",
                    operation="UPDATE",
                    pgid="pgtrigger_finished_read_only_b319a",
                    table="exchange_ordercommand",
                    when="BEFORE",
                ),
            ),
        ),
        migrations.AddConstraint(
            model_name="order",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("average_price__gt", 0),
                        ("filled__gt", 0),
                        ("filled_quote__gt", 0),
                        django.db.models.lookups.LessThan(
                            django.db.models.functions.math.Abs(
                                django.db.models.expressions.CombinedExpression(
                                    django.db.models.expressions.CombinedExpression(
                                        models.F("average_price"), "*", models.F("filled")
                                    ),
                                    "-",
                                    models.F("filled_quote"),
                                )
                            ),
                            django.db.models.expressions.CombinedExpression(
                                models.F("filled"), "*", models.Value(Decimal("1E-8"))
                            ),
                        ),
                    ),
                    models.Q(("average_price__isnull", True), ("filled", 0), ("filled_quote", 0)),
                    _connector="OR",
                ),
                name="order_fill_totals_consistent",
            ),
        ),
        migrations.AddConstraint(
            model_name="order",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("type__in", ("LIMIT", "STOP_LIMIT", "TAKE_PROFIT_LIMIT")),
                    models.Q(
                        ("time_in_force", "IOC"),
                        models.Q(("status__in", ["OPEN", "PARTIALLY_FILLED"]), _negated=True),
                    ),
                    models.Q(
                        ("status__in", ("FILLED", "CANCELLED", "REJECTED", "EXPIRED")),
                        ("time_in_force", "FOK"),
                    ),
                    _connector="OR",
                ),
                name="order_market_types_do_not_rest",
            ),
        ),
        migrations.AddConstraint(
            model_name="order",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "maker_fee_rate__gte",
                        django.db.models.expressions.CombinedExpression(
                            models.F("taker_fee_rate"), "*", models.Value(-1)
                        ),
                    ),
                    ("taker_fee_rate__gte", 0),
                    models.Q(
                        ("maker_fee_rate__lte", models.F("taker_fee_rate")),
                        ("status__in", ("FILLED", "CANCELLED", "REJECTED", "EXPIRED")),
                        _connector="OR",
                    ),
                ),
                name="order_fee_rates",
            ),
        ),
        migrations.AddConstraint(
            model_name="order",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("post_only", False),
                    models.Q(("time_in_force__in", ["GTC", "GTT"]), ("type", "LIMIT")),
                    models.Q(
                        ("status__in", ("FILLED", "CANCELLED", "REJECTED", "EXPIRED")),
                        ("time_in_force__in", ["GTC", "GTT"]),
                        ("type__in", ("LIMIT", "STOP_LIMIT", "TAKE_PROFIT_LIMIT")),
                    ),
                    _connector="OR",
                ),
                name="order_post_only_rests",
            ),
        ),
    ]
