"""Staff controls of markets, through the matcher's journal: halt and resume, cancel
every order, and rules changes (SET_RULES) that the matcher applies in order with the
orders around it. Each is audited; each refusal changes nothing."""

from decimal import Decimal

import pytest
from django.db import DatabaseError, IntegrityError, transaction

from compliance.models import AuditEvent
from compliance.services.accounts import ControlError
from compliance.services.audit import Actor
from compliance.services.markets import (
    MarketControlError,
    market_cancel_all_orders,
    market_halt_request,
    market_resume_request,
    market_rules_change,
)
from exchange.matcher.market import MarketMatcher
from exchange.models import (
    CommandKind,
    CommandStatus,
    Market,
    MarketStatus,
    Order,
    OrderCommand,
    Trade,
)
from exchange.services.orders import OrderRejected
from portfolio.reconciliation import ledger_check
from tests.factories import place_order
from tests.live import wait_for

D = Decimal
pytestmark = pytest.mark.django_db


@pytest.fixture
def officer(staff):
    return Actor(user=staff, ip_address="10.0.0.9")


def commands(market) -> list[tuple[str, str]]:
    return list(OrderCommand.objects.filter(market=market).values_list("kind", "status"))


def rules(market) -> dict[str, Decimal]:
    market = Market.objects.get(pk=market.pk)
    return {
        name: getattr(market, name)
        for name in ("maker_fee_rate", "taker_fee_rate", "min_quantity", "min_notional")
    } | {"price_band": market.price_band}


# --- halt, resume, cancel all ----------------------------------------------------------


def test_a_halt_takes_effect_when_the_matcher_applies_it_and_is_audited(
    market, buyer, officer, staff
):
    matcher = MarketMatcher(market)
    command = market_halt_request(actor=officer, market=market, reason="oracle outage")

    assert (command.kind, command.status) == (CommandKind.HALT, CommandStatus.PENDING)
    market.refresh_from_db()
    assert market.status == MarketStatus.OPEN  # the matcher has not applied it yet
    with pytest.raises(MarketControlError, match="HALT of ETH-USDC is waiting"):
        market_halt_request(actor=officer, market=market, reason="twice")

    matcher.run_batch()
    market.refresh_from_db()
    assert market.status == MarketStatus.HALTED
    with pytest.raises(OrderRejected) as refused:
        place_order(buyer, market, "BUY", "1", "99")
    assert refused.value.code == "MARKET_HALTED"
    with pytest.raises(MarketControlError, match="is HALTED, not OPEN"):
        market_halt_request(actor=officer, market=market, reason="again")

    market_resume_request(actor=officer, market=market, reason="oracle back")
    matcher.run_batch()
    market.refresh_from_db()
    assert market.status == MarketStatus.OPEN

    halt, resume = AuditEvent.objects.order_by("id")
    assert (halt.action, halt.actor, halt.reason, halt.before, halt.after) == (
        "market.halt",
        staff,
        "oracle outage",
        {"status": "OPEN"},
        {"command": command.pk, "kind": "HALT"},
    )
    assert (resume.action, resume.target_id, resume.before) == (
        "market.resume",
        str(market.pk),
        {"status": "HALTED"},
    )


def test_resuming_an_open_market_or_without_a_reason_is_refused(market, officer):
    with pytest.raises(MarketControlError, match="is OPEN, not HALTED"):
        market_resume_request(actor=officer, market=market, reason="why not")
    with pytest.raises(ControlError, match="give a reason"):
        market_halt_request(actor=officer, market=market, reason=" ")
    assert commands(market) == []
    assert not AuditEvent.objects.exists()


def test_cancel_all_in_a_market_cancels_every_accounts_orders(market, buyer, seller, officer):
    matcher = MarketMatcher(market)
    orders = [
        place_order(buyer, market, "BUY", "1", "99"),
        place_order(buyer, market, "BUY", "1", "98"),
        place_order(seller, market, "SELL", "2", "105"),
    ]
    matcher.run_batch()

    command = market_cancel_all_orders(actor=officer, market=market, reason="bad data feed")
    matcher.run_batch()

    assert (command.kind, command.account_id) == (CommandKind.CANCEL_ALL, None)
    assert [Order.objects.get(pk=o.pk).status for o in orders] == ["CANCELLED"] * 3
    assert ledger_check() == []
    event = AuditEvent.objects.get()
    assert (event.action, event.before, event.after) == (
        "market.cancel_all_orders",
        {"open_orders": 3},
        {"command": command.pk},
    )
    with pytest.raises(MarketControlError, match="has no open orders"):
        market_cancel_all_orders(actor=officer, market=market, reason="again")
    assert AuditEvent.objects.count() == 1


# --- rules changes ---------------------------------------------------------------------


def test_new_rules_reach_the_market_row_only_when_the_matcher_applies_them(market, buyer, officer):
    matcher = MarketMatcher(market)
    before = rules(market)
    command = market_rules_change(
        actor=officer,
        market=market,
        reason="fee schedule 2027",
        maker_fee_rate=D("0.0001"),
        taker_fee_rate=D("0.0008"),
        min_notional=D("5"),
    )
    assert command.kind == CommandKind.SET_RULES
    assert command.payload == {
        "maker_fee_rate": "0.0001",
        "taker_fee_rate": "0.0008",
        "min_quantity": "0.00100000",
        "min_notional": "5",
        "price_band": "0.05000000",
    }
    assert rules(market) == before
    # Accepted before the matcher applied the change: the old rates, the old minimum.
    early = place_order(buyer, market, "BUY", "0.01", "100")
    assert (early.maker_fee_rate, early.taker_fee_rate) == (D("0.0002"), D("0.0005"))

    matcher.run_batch()

    assert rules(market) == before | {
        "maker_fee_rate": D("0.0001"),
        "taker_fee_rate": D("0.0008"),
        "min_notional": D("5"),
    }
    assert OrderCommand.objects.get(pk=command.pk).status == CommandStatus.DONE
    market.refresh_from_db()
    late = place_order(buyer, market, "BUY", "1", "100")
    assert (late.maker_fee_rate, late.taker_fee_rate) == (D("0.0001"), D("0.0008"))
    with pytest.raises(OrderRejected) as refused:
        place_order(buyer, market, "BUY", "0.01", "100")
    assert refused.value.code == "BELOW_MIN_NOTIONAL"

    event = AuditEvent.objects.get()
    assert event.action == "market.rules_change"
    assert event.before == {
        "maker_fee_rate": "0.00020000",
        "taker_fee_rate": "0.00050000",
        "min_quantity": "0.00100000",
        "min_notional": "1.00000000",
        "price_band": "0.05000000",
    }
    assert event.after == command.payload | {"command": command.pk}


def test_a_maker_fee_above_the_taker_fee_is_refused(market, officer):
    with pytest.raises(MarketControlError, match="maker_fee_rate must lie between"):
        market_rules_change(
            actor=officer,
            market=market,
            reason="upside down",
            maker_fee_rate=D("0.001"),
            taker_fee_rate=D("0.0005"),
        )
    assert not OrderCommand.objects.exists()


def test_a_rebate_accepted_under_old_rules_never_exceeds_a_later_takers_fee(
    market, buyer, seller, officer
):
    matcher = MarketMatcher(market)
    market_rules_change(
        actor=officer,
        market=market,
        reason="rebate promo",
        maker_fee_rate=D("-0.0005"),
        taker_fee_rate=D("0.0005"),
    )
    matcher.run_batch()
    market.refresh_from_db()
    ask = place_order(seller, market, "SELL", "1", "100")  # rests with a 5 bp rebate
    matcher.run_batch()
    market_rules_change(
        actor=officer,
        market=market,
        reason="promo over",
        maker_fee_rate=D("0"),
        taker_fee_rate=D("0.0001"),
    )
    matcher.run_batch()
    market.refresh_from_db()
    bid = place_order(buyer, market, "BUY", "1", "100")  # pays 1 bp
    matcher.run_batch()

    assert ask.maker_fee_rate == D("-0.0005")
    trade = Trade.objects.get()
    assert (trade.taker_fee, trade.maker_fee) == (D("0.01"), D("-0.01"))
    assert {o.status for o in Order.objects.filter(pk__in=[ask.pk, bid.pk])} == {"FILLED"}
    assert ledger_check() == []


def test_a_new_price_band_binds_the_market_orders_the_matcher_applies_after_it(
    market, buyer, seller, officer
):
    matcher = MarketMatcher(market)
    place_order(buyer, market, "BUY", "1", "100")
    place_order(buyer, market, "BUY", "1", "97")
    matcher.run_batch()

    market_rules_change(actor=officer, market=market, reason="volatility", price_band=D("0.02"))
    # In the journal after the change: it may sweep only to 98 (2% under the best bid).
    sell = place_order(seller, market, "SELL", "2", None, type="MARKET", time_in_force="IOC")
    matcher.run_batch()

    assert matcher.book.price_band_bps == 200
    sell = Order.objects.get(pk=sell.pk)
    assert (sell.status, sell.filled, sell.reason) == ("CANCELLED", D(1), "PRICE_BAND")
    # A matcher started afresh reads the band from the market row.
    assert MarketMatcher(market).book.price_band_bps == 200
    assert ledger_check() == []


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"tick_size": D("0.1")}, "tick_size cannot change on a listed market"),
        ({"lot_size": D("0.01")}, "lot_size cannot change on a listed market"),
        ({"taker_fee_rate": D("0.2")}, "taker_fee_rate must lie between 0 and 0.1"),
        ({"taker_fee_rate": D("-0.001")}, "taker_fee_rate must lie between 0 and 0.1"),
        ({"maker_fee_rate": D("-0.001")}, "a maker rebate may never exceed the taker fee"),
        ({"min_quantity": D("0.0015")}, "min_quantity must be a positive multiple of the lot"),
        ({"min_quantity": D("0")}, "min_quantity must be a positive multiple of the lot"),
        ({"min_notional": D("-1")}, "min_notional may not be negative"),
        ({"price_band": D("1")}, "price_band must lie strictly between 0 and 1"),
        ({"price_band": D("0")}, "price_band must lie strictly between 0 and 1"),
        ({"maker_fee_rate": D("0.000000001")}, "more than 8 decimal places"),
        ({"min_notional": "ten"}, "min_notional must be a number"),
        ({"min_notional": D("NaN")}, "must be a finite number"),
        ({"maker_fee_rate": D("0.0002")}, "nothing to change"),
        ({}, "nothing to change"),
    ],
)
def test_a_rules_change_the_market_could_not_take_is_refused_and_changes_nothing(
    market, officer, change, error
):
    before = rules(market)
    with pytest.raises(MarketControlError, match=error):
        market_rules_change(actor=officer, market=market, reason="test", **change)
    assert rules(market) == before
    assert commands(market) == []
    assert not AuditEvent.objects.exists()


def test_one_rules_change_waits_for_the_matcher_at_a_time(market, officer):
    first = market_rules_change(
        actor=officer, market=market, reason="one", taker_fee_rate=D("0.0003")
    )
    # Checked against the rules in force, this one alone would be fine; after the first
    # it would not (a rebate above the taker fee): so it waits its turn.
    with pytest.raises(MarketControlError, match=f"waiting for the matcher \\(command #{first.pk}"):
        market_rules_change(actor=officer, market=market, reason="two", maker_fee_rate=D("-0.0004"))
    MarketMatcher(market).run_batch()
    with pytest.raises(MarketControlError, match="a maker rebate may never exceed"):
        market_rules_change(actor=officer, market=market, reason="two", maker_fee_rate=D("-0.0004"))
    assert commands(market) == [("SET_RULES", "DONE")]


def test_the_journal_refuses_a_rules_command_aimed_at_an_account(market, trader):
    with (
        pytest.raises(IntegrityError, match="ordercommand_targets_match_kind"),
        transaction.atomic(),
    ):
        OrderCommand.objects.create(market=market, kind=CommandKind.SET_RULES, account=trader)


def test_the_market_table_refuses_rules_that_break_its_checks(market):
    with pytest.raises(DatabaseError, match="market_fee_rates"), transaction.atomic():
        Market.objects.filter(pk=market.pk).update(maker_fee_rate=D("-0.001"))


@pytest.mark.django_db(transaction=True)
def test_a_running_matcher_applies_a_halt_and_new_rules_in_journal_order(
    market, buyer, matchers, officer
):
    matchers.start()
    market_rules_change(actor=officer, market=market, reason="promo", maker_fee_rate=D("0"))
    market_halt_request(actor=officer, market=market, reason="maintenance")

    wait_for(
        lambda: Market.objects.get(pk=market.pk).status == MarketStatus.HALTED,
        30,
        "the halt",
        matchers,
    )
    assert rules(market)["maker_fee_rate"] == D("0")
    done = OrderCommand.objects.filter(market=market).order_by("sequence")
    assert [(c.kind, c.status) for c in done] == [("SET_RULES", "DONE"), ("HALT", "DONE")]
