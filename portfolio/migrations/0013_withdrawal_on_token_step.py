"""Withdrawals on their token's step, in the database as in ``vault._payable``: a
BEFORE INSERT trigger refuses an amount finer than the asset's decimals (at most 8)."""

import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("portfolio", "0012_maker_fee_within_taker_fee"),
    ]

    operations = [
        pgtrigger.migrations.AddTrigger(
            model_name="vaultoperation",
            trigger=pgtrigger.compiler.Trigger(
                name="withdrawal_on_token_step",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    condition="WHEN (NEW.\"kind\" = 'WITHDRAWAL')",
                    func="IF NEW.amount <> round(NEW.amount, (SELECT LEAST(decimals, 8) FROM exchange_asset WHERE id = NEW.asset_id)) THEN RAISE EXCEPTION 'withdrawal % is finer than its token moves', NEW.amount USING ERRCODE = 'check_violation', CONSTRAINT = 'vaultop_withdrawal_on_token_step'; END IF; RETURN NEW;",
                    hash="106c9d44e62f3c5d59d8be88a26ff9ced48ce7b0",
                    operation="INSERT",
                    pgid="pgtrigger_withdrawal_on_token_step_36f61",
                    table="portfolio_vaultoperation",
                    when="BEFORE",
                ),
            ),
        ),
    ]
