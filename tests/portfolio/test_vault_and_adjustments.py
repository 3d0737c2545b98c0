"""Deposits credit once; withdrawals hold, wait for approval above the trader's limit,
and either leave the vault or return to available; staff corrections need two
people. ``ledger_check`` passes after each case."""

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from exchange.models import AccountStatus, Order
from portfolio.models import (
    AdjustmentStatus,
    FeeTier,
    LedgerAccount,
    LedgerAccountKind,
    LedgerTransaction,
    VaultOperation,
    VaultOperationStatus,
    WithdrawalLimit,
)
from portfolio.reconciliation import ledger_check
from portfolio.selectors import fee_rates_for
from portfolio.services.adjustments import (
    AdjustmentError,
    adjustment_post,
    adjustment_reject,
    adjustment_request,
)
from portfolio.services.ledger import InsufficientFunds
from portfolio.services.vault import (
    IdempotencyConflict,
    InvalidAmount,
    InvalidTransition,
    VaultError,
    deposit_credit,
    withdrawal_approve,
    withdrawal_complete,
    withdrawal_fail,
    withdrawal_process,
    withdrawal_reject,
    withdrawal_request,
)
from tests.factories import AccountFactory, OrderFactory, random_hex
from tests.portfolio import sim

pytestmark = pytest.mark.django_db
D = Decimal
DESTINATION = "0x" + "ab" * 20


def vault_balance(asset) -> Decimal:
    return LedgerAccount.objects.get(kind=LedgerAccountKind.VAULT, asset=asset).balance


@pytest.fixture
def books_balance(request):
    yield
    assert ledger_check() == []


# --- deposits ------------------------------------------------------------------------


def test_a_deposit_event_is_credited_once(quote, books_balance):
    trader = AccountFactory()
    event = {"tx_hash": random_hex(32), "log_index": 3, "block_number": 100}
    first = deposit_credit(account=trader, asset=quote, amount=D("250.5"), **event)
    again = deposit_credit(account=trader, asset=quote, amount=D("250.5"), **event)
    assert again.pk == first.pk
    assert first.balance_after == D("250.5")
    assert sim.balance(trader, quote) == (D("250.5"), D(0))
    assert vault_balance(quote) == D("-250.5")
    assert LedgerTransaction.objects.filter(kind="DEPOSIT").count() == 1


def test_the_same_event_reported_with_other_terms_is_refused(quote, books_balance):
    trader = AccountFactory()
    event = {"tx_hash": random_hex(32), "log_index": 0, "block_number": 1}
    deposit_credit(account=trader, asset=quote, amount=D(10), **event)
    with pytest.raises(IdempotencyConflict):
        deposit_credit(account=trader, asset=quote, amount=D(11), **event)
    assert sim.balance(trader, quote) == (D(10), D(0))


def test_one_event_is_credited_once_however_its_hash_is_spelt(quote, books_balance):
    trader = AccountFactory()
    digits = random_hex(32)[2:]
    for spelling in ("0x" + digits, digits, "0X" + digits.upper(), f" 0x{digits}\n"):
        deposit_credit(
            account=trader,
            asset=quote,
            amount=D(100),
            tx_hash=spelling,
            log_index=0,
            block_number=1,
        )
    assert sim.balance(trader, quote) == (D(100), D(0))
    assert VaultOperation.objects.get().tx_hash == "0x" + digits


@pytest.mark.parametrize("tx_hash", ["", "0x", "0x" + "ab" * 31, "0x" + "gg" * 32, None])
def test_a_deposit_whose_hash_is_not_a_transaction_hash_is_refused(quote, tx_hash):
    with pytest.raises(VaultError, match="transaction hash") as refused:
        deposit_credit(
            account=AccountFactory(),
            asset=quote,
            amount=D(1),
            tx_hash=tx_hash,
            log_index=0,
            block_number=1,
        )
    assert refused.value.code == "INVALID_TX_HASH"
    assert not LedgerTransaction.objects.exists()


def test_a_deposit_finer_than_its_token_moves_is_refused(quote):
    """USDC moves in steps of 10^-6: a credit of 1.0000001 is money the vault never got."""
    with pytest.raises(InvalidAmount, match=r"steps of 0\.000001"):
        deposit_credit(
            account=AccountFactory(),
            asset=quote,
            amount=D("1.0000001"),
            tx_hash=random_hex(32),
            log_index=0,
            block_number=1,
        )
    assert not LedgerTransaction.objects.exists()


@pytest.mark.parametrize("amount", [D(0), D(-1), D("0.000000001"), D("NaN")])
def test_a_bad_amount_is_a_clear_error_and_moves_nothing(quote, amount):
    trader = AccountFactory()
    with pytest.raises(VaultError, match="amount"):
        deposit_credit(
            account=trader,
            asset=quote,
            amount=amount,
            tx_hash=random_hex(32),
            log_index=0,
            block_number=1,
        )
    assert not LedgerTransaction.objects.exists()


# --- withdrawals ---------------------------------------------------------------------


def request(trader, asset, amount, key="w-1"):
    return withdrawal_request(
        account=trader,
        asset=asset,
        amount=D(amount),
        destination_address=DESTINATION,
        idempotency_key=key,
    )


def test_a_withdrawal_is_held_approved_sent_and_leaves_the_vault(
    quote, buyer, staff, books_balance
):
    withdrawal = request(buyer, quote, "400")
    assert withdrawal.status == VaultOperationStatus.REQUESTED  # no limit row: staff decide
    assert sim.balance(buyer, quote) == (D("9600"), D("400"))

    withdrawal_approve(withdrawal=withdrawal, approved_by=staff)
    withdrawal_process(withdrawal=withdrawal)
    done = withdrawal_complete(withdrawal=withdrawal, tx_hash=random_hex(32), block_number=7)

    assert done.status == VaultOperationStatus.COMPLETED
    assert done.reviewed_by == staff
    assert sim.balance(buyer, quote) == (D("9600"), D(0))
    assert vault_balance(quote) == D("-9600")


def test_withdrawals_within_the_tier_limit_are_approved_automatically(quote, buyer, books_balance):
    WithdrawalLimit.objects.create(kyc_tier=buyer.kyc_tier, asset=quote, auto_approve_max=500)
    assert request(buyer, quote, "500", key="small").status == VaultOperationStatus.APPROVED
    assert request(buyer, quote, "500.01", key="big").status == VaultOperationStatus.REQUESTED


@pytest.mark.parametrize("outcome", ["reject", "fail"])
def test_a_refused_withdrawal_returns_the_funds(quote, buyer, staff, outcome, books_balance):
    withdrawal = request(buyer, quote, "400")
    if outcome == "reject":
        done = withdrawal_reject(withdrawal=withdrawal, rejected_by=staff, reason="sanctions hit")
        assert done.status == VaultOperationStatus.REJECTED
    else:
        withdrawal_approve(withdrawal=withdrawal, approved_by=staff)
        withdrawal_process(withdrawal=withdrawal)
        done = withdrawal_fail(withdrawal=withdrawal, reason="reverted on chain")
        assert done.status == VaultOperationStatus.FAILED
    assert sim.balance(buyer, quote) == (D("10000"), D(0))
    assert vault_balance(quote) == D("-10000")


def test_a_retried_withdrawal_request_returns_the_original(quote, buyer, books_balance):
    first = request(buyer, quote, "100", key="retry-me")
    assert request(buyer, quote, "100", key="retry-me").pk == first.pk
    assert sim.balance(buyer, quote) == (D("9900"), D("100"))
    with pytest.raises(IdempotencyConflict):
        request(buyer, quote, "200", key="retry-me")


def test_withdrawals_move_only_along_their_workflow(quote, buyer, staff, books_balance):
    withdrawal = request(buyer, quote, "100")
    with pytest.raises(InvalidTransition, match="REQUESTED; expected PROCESSING"):
        withdrawal_complete(withdrawal=withdrawal, tx_hash=random_hex(32), block_number=1)
    withdrawal_approve(withdrawal=withdrawal, approved_by=staff)
    withdrawal_process(withdrawal=withdrawal)
    with pytest.raises(InvalidTransition):
        withdrawal_reject(withdrawal=withdrawal, rejected_by=staff, reason="too late")
    assert sim.balance(buyer, quote) == (D("9900"), D("100"))


def test_a_withdrawal_beyond_the_available_balance_is_refused(market, quote, buyer):
    sim.place(buyer, market, "BUY", "50", "100")  # 5,002.5 of 10,000 now held
    with pytest.raises(InsufficientFunds, match="insufficient USDC"):
        request(buyer, quote, "5000")
    assert sim.balance(buyer, quote) == (D("4997.5"), D("5002.5"))


def test_a_withdrawal_moves_no_finer_than_the_token_does(quote, base, buyer):
    sim.deposit(buyer, base, "1")
    with pytest.raises(InvalidAmount, match=r"USDC moves in steps of 0\.000001;"):
        request(buyer, quote, "1.0000001")
    assert sim.balance(buyer, quote) == (D("10000"), D(0))
    assert request(buyer, quote, "1.000001", key="w-2").amount == D("1.000001")
    assert request(buyer, base, "0.00000001", key="w-3").amount == D("0.00000001")  # 18


def test_a_frozen_account_cannot_withdraw(quote, buyer):
    buyer.status = AccountStatus.FROZEN
    buyer.save(update_fields=["status"])
    with pytest.raises(VaultError, match="FROZEN"):
        request(buyer, quote, "1")
    assert sim.balance(buyer, quote) == (D("10000"), D(0))


def test_a_withdrawal_needs_a_valid_destination(quote, buyer):
    with pytest.raises(ValueError, match="not an EVM address"):
        withdrawal_request(
            account=buyer,
            asset=quote,
            amount=D(1),
            destination_address="0x123",
            idempotency_key="bad-destination",
        )


# --- adjustments ---------------------------------------------------------------------


def test_an_adjustment_posts_only_when_a_second_staff_user_approves(
    quote, buyer, staff, other_staff, books_balance
):
    adjustment = adjustment_request(
        account=buyer, asset=quote, amount=D("25"), reason="goodwill", requested_by=staff
    )
    with pytest.raises(AdjustmentError, match="someone other than its requester"):
        adjustment_post(adjustment=adjustment, approved_by=staff)
    assert sim.balance(buyer, quote) == (D("10000"), D(0))

    posted = adjustment_post(adjustment=adjustment, approved_by=other_staff)
    assert posted.status == AdjustmentStatus.POSTED
    assert sim.balance(buyer, quote) == (D("10025"), D(0))
    with pytest.raises(AdjustmentError, match="already POSTED"):
        adjustment_post(adjustment=adjustment, approved_by=other_staff)


def test_a_debit_adjustment_cannot_overdraw(quote, buyer, staff, other_staff, books_balance):
    adjustment = adjustment_request(
        account=buyer, asset=quote, amount=D("-10001"), reason="clawback", requested_by=staff
    )
    with pytest.raises(InsufficientFunds):
        adjustment_post(adjustment=adjustment, approved_by=other_staff)
    rejected = adjustment_reject(adjustment=adjustment, rejected_by=other_staff)
    assert rejected.status == AdjustmentStatus.REJECTED
    assert sim.balance(buyer, quote) == (D("10000"), D(0))


def test_only_staff_may_request_adjustments(quote, buyer, django_user_model):
    customer = django_user_model.objects.create_user("customer")
    with pytest.raises(AdjustmentError, match="not active staff"):
        adjustment_request(
            account=buyer, asset=quote, amount=D(1), reason="x", requested_by=customer
        )


# --- fee tiers -----------------------------------------------------------------------


def test_volume_tiers_lower_fees_and_never_raise_them(market, buyer, seller):
    FeeTier.objects.create(
        name="VIP 1",
        quote=market.quote,
        min_volume_30d=D(150),
        maker_fee_rate=D("0.0001"),
        taker_fee_rate=D("0.0009"),
    )
    assert fee_rates_for(account=buyer, market=market).taker == D("0.0005")
    ask = sim.place(seller, market, "SELL", "2", "100")
    bid = sim.place(buyer, market, "BUY", "2", "100", accept=False)
    sim.fill_and_settle(ask, bid, "2")  # 200 of volume for both
    rates = fee_rates_for(account=buyer, market=market)
    assert rates.tier.name == "VIP 1"
    assert rates.maker == D("0.0001")  # the tier's lower maker rate
    assert rates.taker == D("0.0005")  # the market's, lower than the tier's


def test_a_market_rebate_never_exceeds_the_taker_fee_a_tier_lowers(market, buyer):
    """A market paying makers 2 bps and a tier charging takers 1 bp: the rebate the
    trader's orders carry is capped at the taker fee they carry, as every order's
    rates must be, and the trader can place orders."""
    from exchange.models import Market

    Market.objects.filter(pk=market.pk).update(maker_fee_rate=D("-0.0002"))
    market.refresh_from_db()
    FeeTier.objects.create(
        name="VIP 0",
        quote=market.quote,
        min_volume_30d=D(0),
        maker_fee_rate=D(0),
        taker_fee_rate=D("0.0001"),
    )
    rates = fee_rates_for(account=buyer, market=market)
    assert (rates.maker, rates.taker) == (D("-0.0001"), D("0.0001"))
    from tests.factories import place_order

    order = place_order(buyer, market, "BUY", "1", "99")  # through order_place
    assert (order.maker_fee_rate, order.taker_fee_rate) == (D("-0.0001"), D("0.0001"))


# --- ledger_check ------------------------------------------------------------------------


def test_ledger_check_passes_on_sound_books(market, buyer, seller, capsys):
    ask = sim.place(seller, market, "SELL", "2", "100")
    sim.place(buyer, market, "BUY", "1", "99")
    bid = sim.place(buyer, market, "BUY", "1", "100", accept=False)
    sim.fill_and_settle(ask, bid, "1")
    call_command("ledger_check")
    assert "ledger check passed" in capsys.readouterr().out


def _tamper(statement: str, params) -> None:
    """Change a row the way only a superuser with triggers switched off could."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(statement, params)
        cursor.execute("SET LOCAL session_replication_role = origin")


def test_ledger_check_names_a_balance_that_is_not_its_postings(quote, buyer, capsys):
    account = LedgerAccount.objects.get(kind=LedgerAccountKind.AVAILABLE, owner=buyer)
    _tamper("UPDATE portfolio_ledgeraccount SET balance = balance + 1 WHERE id = %s", [account.pk])
    with pytest.raises(CommandError, match="ledger check failed"):
        call_command("ledger_check")
    err = capsys.readouterr().err
    assert f"balance is not its postings: ledger account {account.pk}" in err
    assert "asset does not sum to zero: USDC: expected 0, found 1" in err


def test_ledger_check_finds_money_left_locked_for_a_finished_order(market, buyer):
    order = sim.place(buyer, market, "BUY", "1", "100")
    _tamper(
        "UPDATE exchange_order SET status = 'CANCELLED', done_at = now(),"
        " reason = 'USER_CANCEL' WHERE id = %s",
        [order.pk],
    )
    problems = [str(p) for p in ledger_check()]
    assert problems == [
        f"order does not hold its worst-case cost: order {order.pk} (CANCELLED, asset "
        f"{market.quote_id}): expected 0, found 100.05000000 (off by 100.05000000)"
    ]


def _found() -> list[tuple]:
    return [(p.rule, p.subject, p.expected, p.actual) for p in ledger_check()]


def _post_around_the_ledger(kind: str, *legs: tuple[LedgerAccount, str, Order | None]) -> None:
    """Post ``legs`` as one balanced ledger transaction the way a restore or a manual
    repair could: with the ledger's triggers switched off, each balance moved by hand
    to the sum of its postings."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            "INSERT INTO portfolio_ledgertransaction (kind, idempotency_key, description)"
            " VALUES (%s, %s, '') RETURNING id",
            [kind, random_hex(8)],
        )
        [txn] = cursor.fetchone()
        for account, amount, order in legs:
            cursor.execute(
                "INSERT INTO portfolio_posting (transaction_id, ledger_account_id, amount,"
                " order_id) VALUES (%s, %s, %s, %s)",
                [txn, account.pk, D(amount), order and order.pk],
            )
            cursor.execute(
                "UPDATE portfolio_ledgeraccount SET balance = balance + %s WHERE id = %s",
                [D(amount), account.pk],
            )
        cursor.execute("SET LOCAL session_replication_role = origin")


def test_ledger_check_finds_an_order_holding_another_asset_than_it_pays_with(market, base, buyer):
    order = OrderFactory(account=buyer, market=market, side="BUY")  # 1 at 100, no fees
    sim.deposit(buyer, base, "200")
    available = LedgerAccount.objects.get(kind=LedgerAccountKind.AVAILABLE, asset=base)
    held = LedgerAccount.objects.create(kind=LedgerAccountKind.HELD, asset=base, owner=buyer)
    # A buy pays with the quote; this one holds 100 of the base, and none of the quote.
    _post_around_the_ledger("HOLD", (available, "-100", None), (held, "100", order))

    assert _found() == [
        (
            "order does not hold its worst-case cost",
            f"order {order.pk} (PENDING, asset {market.quote_id})",
            D(100),
            D(0),
        ),
        (
            "order holds an asset it does not pay with",
            f"order {order.pk} (PENDING, asset {base.pk})",
            D(0),
            D(100),
        ),
    ]


def test_ledger_check_finds_a_trade_settled_with_other_amounts_than_its_terms(
    market, buyer, seller
):
    ask = sim.place(seller, market, "SELL", "1", "100")
    bid = sim.place(buyer, market, "BUY", "1", "100", accept=False)
    trade = sim.fill_and_settle(ask, bid, "1")
    assert ledger_check() == []
    # The seller keeps the maker fee (0.02) the venue should have had: paid 100, not
    # 99.98. Every balance is still its postings and every asset sums to zero.
    settlement = LedgerTransaction.objects.get(trade=trade)
    paid = LedgerAccount.objects.get(
        kind=LedgerAccountKind.AVAILABLE, asset=market.quote, owner=seller
    )
    revenue = LedgerAccount.objects.get(kind=LedgerAccountKind.FEE_REVENUE, market=market)
    for account, delta in ((paid, D("0.02")), (revenue, D("-0.02"))):
        _tamper(
            "UPDATE portfolio_posting SET amount = amount + %s"
            " WHERE transaction_id = %s AND ledger_account_id = %s",
            [delta, settlement.pk, account.pk],
        )
        _tamper(
            "UPDATE portfolio_ledgeraccount SET balance = balance + %s WHERE id = %s",
            [delta, account.pk],
        )

    assert _found() == [
        ("trade is not settled as its terms say", f"trade {trade.pk} fees", D("0.07"), D("0.05")),
        (
            "trade is not settled as its terms say",
            f"trade {trade.pk} quote to the seller",
            D("99.98"),
            D(100),
        ),
        (
            "fee revenue is not the fees of settled trades",
            f"market {market.pk} asset {market.quote_id}",
            D("0.07"),
            D("0.05"),
        ),
    ]


@pytest.mark.parametrize(
    ("source", "kind", "rule"),
    [
        (LedgerAccountKind.VAULT, "DEPOSIT", "vault is not its completed deposits and withdrawals"),
        (
            LedgerAccountKind.ADJUSTMENT,
            "ADJUSTMENT",
            "adjustment account is not its posted adjustments",
        ),
    ],
)
def test_ledger_check_finds_money_credited_with_no_operation_behind_it(
    quote, buyer, source, kind, rule
):
    # The buyer's 10,000 came in through a deposit: the vault answers for them.
    assert ledger_check() == []
    venue = LedgerAccount.objects.get_or_create(kind=source, asset=quote)[0]
    before = venue.balance
    available = LedgerAccount.objects.get(kind=LedgerAccountKind.AVAILABLE, owner=buyer)
    # Balanced, so every asset still sums to zero: only the operation is missing.
    _post_around_the_ledger(kind, (venue, "-1000000", None), (available, "1000000", None))

    assert _found() == [(rule, f"asset {quote.pk}", before, before - 1000000)]
