"""Staff controls of accounts: a freeze stops trading and withdrawals and has the
matcher cancel every open order (a real matcher process, too); unfreeze, close and the
cancels; every control is audited in its own transaction, and every refusal changes
nothing."""

import threading
from decimal import Decimal

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction

from compliance.models import AccountFreeze, AuditEvent
from compliance.services.accounts import (
    ControlError,
    account_cancel_all_orders,
    account_close,
    account_freeze,
    account_unfreeze,
    order_force_cancel,
)
from compliance.services.audit import SYSTEM, Actor
from exchange.matcher.market import MarketMatcher
from exchange.models import (
    Account,
    AccountStatus,
    CommandKind,
    CommandStatus,
    Order,
    OrderCommand,
    OrderStatus,
)
from exchange.services.orders import OrderRejected
from portfolio.reconciliation import ledger_check
from portfolio.services.vault import (
    VaultError,
    withdrawal_approve,
    withdrawal_process,
    withdrawal_request,
)
from tests.factories import AssetFactory, MarketFactory, place_order
from tests.live import wait_for
from tests.portfolio import sim

D = Decimal


@pytest.fixture
def officer(staff):
    return Actor(user=staff, ip_address="10.0.0.7")


@pytest.fixture
def btc_market(quote):
    return MarketFactory(base=AssetFactory(symbol="BTC"), quote=quote)


def nothing_recorded() -> bool:
    return not AuditEvent.objects.exists()


def statuses(*orders: Order) -> list[str]:
    return [Order.objects.get(pk=o.pk).status for o in orders]


# --- freeze ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_freeze_cancels_every_open_order_through_the_journal_and_is_audited(
    market, btc_market, buyer, seller, officer, staff
):
    sim.deposit(buyer, btc_market.base, "1")
    eth_bids = [
        place_order(buyer, market, "BUY", "1", "99"),
        place_order(buyer, market, "BUY", "2", "98"),
    ]
    btc_ask = place_order(buyer, btc_market, "SELL", "0.5", "30000")
    others = place_order(seller, market, "SELL", "1", "105")
    eth, btc = MarketMatcher(market), MarketMatcher(btc_market)
    eth.run_batch()
    btc.run_batch()
    assert sim.balance(buyer, market.quote)[1] == D("99.0495") + D("196.098")

    freeze = account_freeze(actor=officer, account=buyer, reason="court order 2026/114")

    buyer.refresh_from_db()
    assert buyer.status == AccountStatus.FROZEN
    assert (freeze.reason, freeze.frozen_by, freeze.lifted_at) == (
        "court order 2026/114",
        staff,
        None,
    )
    commands = OrderCommand.objects.filter(account=buyer, kind=CommandKind.CANCEL_ALL)
    assert sorted(commands.values_list("market__symbol", flat=True)) == ["BTC-USDC", "ETH-USDC"]
    assert set(commands.values_list("status", flat=True)) == {CommandStatus.PENDING}
    # Nothing is cancelled until the matcher applies the commands.
    assert statuses(*eth_bids, btc_ask) == ["OPEN", "OPEN", "OPEN"]

    eth.run_batch()
    btc.run_batch()
    assert statuses(*eth_bids, btc_ask) == ["CANCELLED"] * 3
    assert statuses(others) == ["OPEN"]
    assert sim.balance(buyer, market.quote) == (D(10000), D(0))
    assert sim.balance(buyer, btc_market.base) == (D(1), D(0))
    assert ledger_check() == []

    event = AuditEvent.objects.get()
    assert (event.action, event.actor, event.actor_label, event.ip_address) == (
        "account.freeze",
        staff,
        "ops-1",
        "10.0.0.7",
    )
    assert (event.target_type, event.target_id, event.reason) == (
        "exchange.account",
        str(buyer.pk),
        "court order 2026/114",
    )
    assert event.before == {"status": "ACTIVE"}
    assert event.after == {
        "status": "FROZEN",
        "freeze": freeze.pk,
        "orders_cancelled_in": ["ETH-USDC", "BTC-USDC"],
        "withdrawals_rejected": [],
    }


@pytest.mark.django_db
def test_a_frozen_account_can_neither_trade_nor_withdraw(market, buyer, officer):
    account_freeze(actor=officer, account=buyer, reason="sanctions screening hit")
    buyer.refresh_from_db()
    with pytest.raises(OrderRejected) as refused:
        place_order(buyer, market, "BUY", "1", "99")
    assert refused.value.code == "ACCOUNT_FROZEN"
    with pytest.raises(VaultError, match="FROZEN: withdrawals are blocked"):
        withdrawal_request(
            account=buyer,
            asset=market.quote,
            amount=D("10"),
            destination_address="0x" + "ab" * 20,
            idempotency_key="w-1",
        )
    assert sim.balance(buyer, market.quote) == (D(10000), D(0))


def _withdraw(account, asset, key: str, amount: str = "10"):
    return withdrawal_request(
        account=account,
        asset=asset,
        amount=D(amount),
        destination_address="0x" + "ab" * 20,
        idempotency_key=key,
    )


@pytest.mark.django_db
def test_a_freeze_rejects_the_withdrawals_not_yet_sent(market, buyer, officer, staff):
    quote = market.quote
    waiting = _withdraw(buyer, quote, "w-1")  # REQUESTED: no auto-approval limit
    approved = withdrawal_approve(withdrawal=_withdraw(buyer, quote, "w-2"), approved_by=staff)
    sending = withdrawal_process(
        withdrawal=withdrawal_approve(withdrawal=_withdraw(buyer, quote, "w-3"), approved_by=staff)
    )
    assert sim.balance(buyer, quote) == (D(9970), D(30))

    account_freeze(actor=officer, account=buyer, reason="sanctions screening hit")

    for withdrawal in (waiting, approved, sending):
        withdrawal.refresh_from_db()
    assert [w.status for w in (waiting, approved, sending)] == [
        "REJECTED",
        "REJECTED",
        "PROCESSING",  # on chain already: past stopping
    ]
    assert waiting.reason == "account frozen: sanctions screening hit"
    assert waiting.reviewed_by == staff
    assert sim.balance(buyer, quote) == (D(9990), D(10))
    freeze = AuditEvent.objects.get(action="account.freeze")
    assert freeze.after["withdrawals_rejected"] == [waiting.pk, approved.pk]
    assert ledger_check() == []


@pytest.mark.django_db
def test_a_withdrawal_is_checked_against_the_account_as_it_is_now(market, buyer, officer, staff):
    stale = Account.objects.get(pk=buyer.pk)  # loaded before the freeze
    waiting = _withdraw(buyer, market.quote, "w-1")
    Account.objects.filter(pk=buyer.pk).update(status=AccountStatus.FROZEN)
    with pytest.raises(VaultError, match="FROZEN: withdrawals are blocked"):
        _withdraw(stale, market.quote, "w-2")
    # A request made before the account stopped being active is neither approved nor
    # sent while it is not.
    with pytest.raises(VaultError, match="FROZEN"):
        withdrawal_approve(withdrawal=waiting, approved_by=staff)
    Account.objects.filter(pk=buyer.pk).update(status=AccountStatus.ACTIVE)
    approved = withdrawal_approve(withdrawal=waiting, approved_by=staff)
    Account.objects.filter(pk=buyer.pk).update(status=AccountStatus.FROZEN)
    with pytest.raises(VaultError, match="FROZEN"):
        withdrawal_process(withdrawal=approved)
    approved.refresh_from_db()
    assert approved.status == "APPROVED"
    assert sim.balance(buyer, market.quote) == (D(9990), D(10))


@pytest.mark.django_db(transaction=True)
def test_a_running_matcher_cancels_a_frozen_accounts_orders_and_releases_their_holds(
    market, buyer, seller, matchers, officer
):
    proc = matchers.start()
    bids = [
        place_order(buyer, market, "BUY", "1", "99"),
        place_order(buyer, market, "BUY", "1", "98"),
    ]
    ask = place_order(seller, market, "SELL", "1", "101")
    wait_for(lambda: statuses(*bids, ask) == ["OPEN"] * 3, 30, "the orders to rest", matchers)
    assert proc.poll() is None
    assert sim.balance(buyer, market.quote)[1] > 0

    account_freeze(actor=officer, account=buyer, reason="account takeover suspected")

    wait_for(lambda: statuses(*bids) == ["CANCELLED", "CANCELLED"], 30, "the cancels", matchers)
    assert [o.reason for o in Order.objects.filter(pk__in=[b.pk for b in bids])] == [
        "CANCEL_ALL",
        "CANCEL_ALL",
    ]
    assert statuses(ask) == ["OPEN"]
    assert sim.balance(buyer, market.quote) == (D(10000), D(0))
    assert not OrderCommand.objects.filter(status=CommandStatus.PENDING).exists()
    assert ledger_check() == []


@pytest.mark.django_db
@pytest.mark.parametrize("status", [AccountStatus.FROZEN, AccountStatus.CLOSED])
def test_only_an_active_account_can_be_frozen(trader, officer, status):
    trader.status = status
    trader.save(update_fields=["status"])
    with pytest.raises(ControlError, match=f"is {status}; only an active account"):
        account_freeze(actor=officer, account=trader, reason="again")
    assert not AccountFreeze.objects.exists()
    assert nothing_recorded()


@pytest.mark.django_db
@pytest.mark.parametrize("reason", ["", "   "])
def test_a_freeze_without_a_reason_changes_nothing(market, buyer, officer, reason):
    bid = place_order(buyer, market, "BUY", "1", "99")
    with pytest.raises(ControlError, match="give a reason"):
        account_freeze(actor=officer, account=buyer, reason=reason)
    buyer.refresh_from_db()
    assert buyer.status == AccountStatus.ACTIVE
    assert not AccountFreeze.objects.exists()
    assert list(OrderCommand.objects.values_list("kind", flat=True)) == ["PLACE"]
    assert statuses(bid) == ["PENDING"]
    assert nothing_recorded()


@pytest.mark.django_db
def test_the_platform_cannot_freeze_without_a_staff_user(trader):
    with pytest.raises(ControlError, match="made by a staff user"):
        account_freeze(actor=SYSTEM, account=trader, reason="automatic")
    trader.refresh_from_db()
    assert trader.status == AccountStatus.ACTIVE
    assert nothing_recorded()


@pytest.mark.django_db
def test_a_second_freeze_in_force_is_refused_by_the_database(trader, officer, staff):
    account_freeze(actor=officer, account=trader, reason="first")
    with pytest.raises(IntegrityError, match="accountfreeze_one_in_force"), transaction.atomic():
        AccountFreeze.objects.create(account=trader, reason="second", frozen_by=staff)
    with pytest.raises(DatabaseError, match="Cannot update rows"), transaction.atomic():
        AccountFreeze.objects.filter(account=trader).update(reason="rewritten")


# --- unfreeze --------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_unfreeze_lifts_the_freeze_in_force_and_reactivates_the_account(
    market, trader, officer, other_staff
):
    freeze = account_freeze(actor=officer, account=trader, reason="suspicious deposits")
    lifted = account_unfreeze(
        actor=Actor(user=other_staff), account=trader, reason="source of funds documented"
    )

    trader.refresh_from_db()
    freeze.refresh_from_db()
    assert trader.status == AccountStatus.ACTIVE
    assert lifted == freeze
    assert (freeze.lifted_by, freeze.lift_reason) == (other_staff, "source of funds documented")
    assert freeze.lifted_at is not None
    event = AuditEvent.objects.get(action="account.unfreeze")
    assert (event.actor_label, event.before, event.after) == (
        "ops-2",
        {"status": "FROZEN"},
        {"status": "ACTIVE", "freeze": freeze.pk},
    )
    # Lifted for good: the lift itself cannot be rewritten.
    with pytest.raises(DatabaseError, match="Cannot update rows"), transaction.atomic():
        AccountFreeze.objects.filter(pk=freeze.pk).update(lift_reason="changed")
    # And the account may trade again.
    sim.deposit(trader, market.quote, "100")
    assert place_order(trader, market, "BUY", "0.5", "99").status == OrderStatus.PENDING


@pytest.mark.django_db
def test_unfreezing_an_active_account_is_refused(trader, officer):
    with pytest.raises(ControlError, match="is ACTIVE, not frozen"):
        account_unfreeze(actor=officer, account=trader, reason="mistake")
    assert nothing_recorded()


# --- close -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_account_holding_funds_is_not_closed(market, buyer, officer):
    place_order(buyer, market, "BUY", "1", "99")
    with pytest.raises(ControlError) as refused:
        account_close(actor=officer, account=buyer, reason="offboarding")
    assert "still holds 10000 USDC" in str(refused.value)
    assert "have the trader withdraw" in str(refused.value)
    buyer.refresh_from_db()
    assert buyer.status == AccountStatus.ACTIVE
    assert list(OrderCommand.objects.values_list("kind", flat=True)) == ["PLACE"]
    assert nothing_recorded()


@pytest.mark.django_db
def test_an_empty_account_closes_for_good(trader, officer, staff):
    account_freeze(actor=officer, account=trader, reason="dormant, sanctions match")
    closed = account_close(actor=officer, account=trader, reason="relationship ended")

    assert closed.status == AccountStatus.CLOSED
    trader.refresh_from_db()
    assert trader.status == AccountStatus.CLOSED
    freeze = AccountFreeze.objects.get()
    assert (freeze.lifted_by, freeze.lift_reason) == (staff, "account closed: relationship ended")
    event = AuditEvent.objects.get(action="account.close")
    assert (event.before, event.after) == (
        {"status": "FROZEN"},
        {"status": "CLOSED", "orders_cancelled_in": []},
    )
    for control in (account_freeze, account_unfreeze, account_close):
        with pytest.raises(ControlError):
            control(actor=officer, account=trader, reason="again")
    # The database holds the line too: a closed account never comes back.
    with (
        pytest.raises(DatabaseError, match="Invalid transition"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE exchange_account SET status = 'ACTIVE' WHERE id = %s", [trader.pk])


# --- cancelling orders -----------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_all_orders_leaves_the_account_active(market, btc_market, buyer, seller, officer):
    sim.deposit(buyer, btc_market.base, "1")
    place_order(buyer, market, "BUY", "1", "99")
    place_order(buyer, btc_market, "SELL", "0.5", "30000")
    theirs = place_order(seller, market, "SELL", "1", "105")
    eth, btc = MarketMatcher(market), MarketMatcher(btc_market)

    markets = account_cancel_all_orders(actor=officer, account=buyer, reason="runaway bot")
    eth.run_batch()
    btc.run_batch()

    assert [m.symbol for m in markets] == ["ETH-USDC", "BTC-USDC"]
    assert set(Order.objects.filter(account=buyer).values_list("status", flat=True)) == {
        "CANCELLED"
    }
    assert statuses(theirs) == ["OPEN"]
    buyer.refresh_from_db()
    assert buyer.status == AccountStatus.ACTIVE
    event = AuditEvent.objects.get()
    assert (event.action, event.after) == (
        "account.cancel_all_orders",
        {"orders_cancelled_in": ["ETH-USDC", "BTC-USDC"]},
    )
    with pytest.raises(ControlError, match="has no open orders"):
        account_cancel_all_orders(actor=officer, account=buyer, reason="again")
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db
def test_a_force_cancel_cancels_one_order_and_names_its_account(market, buyer, officer):
    matcher = MarketMatcher(market)
    target = place_order(buyer, market, "BUY", "1", "99")
    kept = place_order(buyer, market, "BUY", "1", "98")
    matcher.run_batch()

    command = order_force_cancel(actor=officer, order=target, reason="erroneous price")
    matcher.run_batch()

    assert (command.kind, command.order_id, command.account_id) == ("CANCEL", target.pk, buyer.pk)
    assert statuses(target, kept) == ["CANCELLED", "OPEN"]
    event = AuditEvent.objects.get()
    assert (event.action, event.target_type, event.target_id) == (
        "order.force_cancel",
        "exchange.order",
        str(target.pk),
    )
    assert event.before == {"status": "OPEN", "remaining": "1.00000000"}
    assert event.after == {"account": buyer.pk, "command": command.pk}
    with pytest.raises(ControlError, match="is CANCELLED already"):
        order_force_cancel(actor=officer, order=target, reason="again")
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_staff_freezing_one_account_at_once_freeze_it_once(trader, staff, other_staff):
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def freeze(user) -> None:
        try:
            barrier.wait(5)
            account_freeze(actor=Actor(user=user), account=trader, reason=f"by {user}")
            outcomes.append("frozen")
        except ControlError as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=freeze, args=(u,)) for u in (staff, other_staff)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(outcomes) == [
        f"{trader} is FROZEN; only an active account can be frozen",
        "frozen",
    ]
    assert AccountFreeze.objects.count() == 1
    assert AuditEvent.objects.filter(action="account.freeze").count() == 1
