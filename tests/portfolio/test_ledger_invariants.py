"""The ledger's rules are PostgreSQL's: each test goes around the services (raw SQL,
bare ORM writes) and expects the database to refuse."""

from decimal import Decimal

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from exchange.models import Trade
from portfolio.models import (
    AdjustmentStatus,
    LedgerAccount,
    LedgerAccountKind,
    LedgerAdjustment,
    LedgerCheck,
    LedgerTransaction,
    Posting,
    VaultOperation,
)
from tests.factories import AccountFactory, OrderFactory
from tests.portfolio import sim
from tests.sql import refused, sql

D = Decimal


def accounts(asset, owner):
    available = LedgerAccount.objects.create(
        kind=LedgerAccountKind.AVAILABLE, asset=asset, owner=owner
    )
    vault = LedgerAccount.objects.get_or_create(kind=LedgerAccountKind.VAULT, asset=asset)[0]
    return available, vault


def post(kind: str, key: str, *legs) -> LedgerTransaction:
    txn = LedgerTransaction.objects.create(kind=kind, idempotency_key=key)
    for account, amount, *order in legs:
        Posting.objects.create(
            transaction=txn,
            ledger_account=account,
            amount=D(amount),
            order=order[0] if order else None,
        )
    return txn


@pytest.mark.django_db(transaction=True)
def test_a_transaction_that_does_not_balance_is_refused_at_commit(quote):
    available, vault = accounts(quote, AccountFactory())
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        post("DEPOSIT", "unbalanced", (vault, "-100"), (available, "99"))
    assert not LedgerTransaction.objects.exists()
    assert LedgerAccount.objects.get(pk=available.pk).balance == 0

    with transaction.atomic():
        post("DEPOSIT", "balanced", (vault, "-100"), (available, "100"))
    assert LedgerAccount.objects.get(pk=available.pk).balance == D(100)


@pytest.mark.django_db(transaction=True)
def test_a_transaction_must_balance_per_asset_not_in_total(base, quote):
    owner = AccountFactory()
    base_available, base_vault = accounts(base, owner)
    sim.deposit(owner, quote, "10")
    quote_available = LedgerAccount.objects.get(
        kind=LedgerAccountKind.AVAILABLE, asset=quote, owner=owner
    )
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        # Sums to zero overall, but creates 5 base and destroys 5 quote.
        post("ADJUSTMENT", "cross-asset", (base_available, "5"), (quote_available, "-5"))
    assert base_vault.balance == 0


@pytest.mark.django_db(transaction=True)
def test_a_transaction_without_postings_is_refused_at_commit():
    with pytest.raises(IntegrityError, match="has no postings"), transaction.atomic():
        LedgerTransaction.objects.create(kind="DEPOSIT", idempotency_key="empty")


@pytest.mark.django_db(transaction=True)
def test_postings_cannot_be_added_to_an_earlier_transaction(quote):
    available, vault = accounts(quote, AccountFactory())
    with transaction.atomic():
        txn = post("DEPOSIT", "first", (vault, "-100"), (available, "100"))
    with refused("in the database transaction that created it"):
        Posting.objects.create(transaction=txn, ledger_account=available, amount=D(1))


@pytest.mark.django_db
def test_a_posting_must_name_a_ledger_transaction_that_exists(quote):
    available, vault = accounts(quote, AccountFactory())
    # The ledger transaction is made in the refused block: the rollback takes it too
    # (it would fail its balance check at commit without postings).
    with refused("ledger transaction [0-9]+ that does not exist"):
        txn = LedgerTransaction.objects.create(kind="DEPOSIT", idempotency_key="named")
        sql(
            "INSERT INTO portfolio_posting (transaction_id, ledger_account_id, amount)"
            " VALUES (%s, %s, -5), (%s, %s, 5)",
            [txn.pk, vault.pk, txn.pk + 1000, available.pk],
        )
    assert not Posting.objects.exists()
    assert not LedgerTransaction.objects.exists()
    assert LedgerAccount.objects.get(pk=available.pk).balance == 0


@pytest.mark.django_db
def test_a_posting_must_name_a_ledger_account_that_exists(quote):
    available, vault = accounts(quote, AccountFactory())
    missing = available.pk + 1000
    # Balanced, and the vault's leg is real: only the missing account is wrong.
    with refused(f"ledger account {missing} that does not exist"):
        txn = LedgerTransaction.objects.create(kind="DEPOSIT", idempotency_key="nowhere")
        sql(
            "INSERT INTO portfolio_posting (transaction_id, ledger_account_id, amount)"
            " VALUES (%s, %s, -5), (%s, %s, 5)",
            [txn.pk, vault.pk, txn.pk, missing],
        )
    assert not Posting.objects.exists()
    assert not LedgerTransaction.objects.exists()
    assert LedgerAccount.objects.get(pk=vault.pk).balance == 0


@pytest.mark.django_db
def test_a_ledger_transaction_must_name_a_trade_that_exists():
    with refused("names a trade that is not in exchange_trade"):
        sql(
            "INSERT INTO portfolio_ledgertransaction (kind, idempotency_key, description,"
            " trade_id) VALUES ('TRADE', 'ghost-trade', '', 987654321)"
        )
    assert not LedgerTransaction.objects.exists()


@pytest.mark.django_db
def test_ledger_rows_cannot_be_truncated_from_under_what_names_them(market, buyer, seller):
    maker = sim.place(seller, market, "SELL", "1", "100")
    taker = sim.place(buyer, market, "BUY", "1", "100")
    trade = sim.fill_and_settle(maker, taker, "0.5")  # a ledger transaction names it
    # PostgreSQL truncates no table with deferred checks still pending: run them now.
    sql("SET CONSTRAINTS ALL IMMEDIATE")
    for table in ("portfolio_ledgeraccount", "portfolio_ledgertransaction", "exchange_trade"):
        with refused(f'cannot truncate table "{table}"'):
            sql(f"TRUNCATE {table} CASCADE")
    assert Posting.objects.exists()
    assert Trade.objects.filter(pk=trade.pk).exists()
    # Together with what names them, as a flush does, they go.
    sql(
        "TRUNCATE portfolio_ledgeraccount, portfolio_ledgertransaction, portfolio_posting,"
        " exchange_trade, exchange_order, exchange_orderarchive, exchange_ordercommand,"
        " exchange_orderstatushistory CASCADE"
    )
    assert not LedgerTransaction.objects.exists()


@pytest.mark.django_db
def test_balances_never_go_negative(quote):
    available, vault = accounts(quote, AccountFactory())
    with refused("ledgeraccount_balance_sign"):
        post("WITHDRAWAL", "overdraw", (available, "-1"), (vault, "1"))


@pytest.mark.django_db
def test_a_balance_moves_only_through_postings(quote):
    available, _vault = accounts(quote, AccountFactory())
    with refused("only through postings"):
        LedgerAccount.objects.filter(pk=available.pk).update(balance=D(1000))
    with refused("only through postings"):
        sql("UPDATE portfolio_ledgeraccount SET balance = 5 WHERE id = %s", [available.pk])


@pytest.mark.django_db
def test_postings_and_transactions_are_append_only(quote):
    available, vault = accounts(quote, AccountFactory())
    txn = post("DEPOSIT", "d1", (vault, "-100"), (available, "100"))
    posting = txn.postings.first()
    with refused("Cannot update rows"):
        Posting.objects.filter(pk=posting.pk).update(amount=D(1))
    with refused("Cannot delete rows"):
        sql("DELETE FROM portfolio_posting WHERE id = %s", [posting.pk])
    with refused("Cannot update rows"):
        LedgerTransaction.objects.filter(pk=txn.pk).update(idempotency_key="other")
    with refused("Cannot delete rows"):
        sql("DELETE FROM portfolio_ledgertransaction WHERE id = %s", [txn.pk])


@pytest.mark.django_db
def test_an_idempotency_key_posts_once(quote):
    available, vault = accounts(quote, AccountFactory())
    post("DEPOSIT", "chain:0xabc:1", (vault, "-100"), (available, "100"))
    with refused("idempotency_key"):
        post("DEPOSIT", "chain:0xabc:1", (vault, "-100"), (available, "100"))


@pytest.mark.django_db
def test_a_posting_may_name_an_order_only_on_that_traders_held_account(market, buyer):
    order = sim.place(buyer, market, "BUY", "1", "100")
    stranger = AccountFactory()
    held = LedgerAccount.objects.create(
        kind=LedgerAccountKind.HELD, asset=market.quote, owner=stranger
    )
    available = LedgerAccount.objects.create(
        kind=LedgerAccountKind.AVAILABLE, asset=market.quote, owner=stranger
    )
    sim.deposit(stranger, market.quote, "10")
    with refused("may name an order"):
        post("HOLD", "wrong-owner", (available, "-1"), (held, "1", order))
    own_available = LedgerAccount.objects.get(
        kind=LedgerAccountKind.AVAILABLE, asset=market.quote, owner=buyer
    )
    own_held = LedgerAccount.objects.get(
        kind=LedgerAccountKind.HELD, asset=market.quote, owner=buyer
    )
    with refused("may name an order"):
        post("HOLD", "not-held", (own_held, "-1"), (own_available, "1", order))


@pytest.mark.django_db
def test_ledger_accounts_belong_to_what_their_kind_says(quote, market):
    with refused("ledgeraccount_owner_matches_kind"):
        LedgerAccount.objects.create(kind=LedgerAccountKind.AVAILABLE, asset=quote)
    with refused("ledgeraccount_owner_matches_kind"):
        LedgerAccount.objects.create(kind=LedgerAccountKind.FEE_REVENUE, asset=quote)
    with refused("ledgeraccount_owner_matches_kind"):
        LedgerAccount.objects.create(
            kind=LedgerAccountKind.VAULT, asset=quote, owner=AccountFactory()
        )
    LedgerAccount.objects.create(kind=LedgerAccountKind.VAULT, asset=quote)
    with refused("ledgeraccount_unique"):  # one vault account per asset, NULLs included
        LedgerAccount.objects.create(kind=LedgerAccountKind.VAULT, asset=quote)


@pytest.mark.django_db
def test_an_adjustment_is_never_approved_by_its_requester(quote, staff):
    adjustment = LedgerAdjustment.objects.create(
        account=AccountFactory(), asset=quote, amount=D(5), reason="refund", requested_by=staff
    )
    with refused("adjustment_four_eyes"):
        sql(
            "UPDATE portfolio_ledgeradjustment SET status = 'POSTED', decided_by_id = %s,"
            " decided_at = now() WHERE id = %s",
            [staff.pk, adjustment.pk],
        )
    with refused("Cannot update rows"):
        LedgerAdjustment.objects.filter(pk=adjustment.pk).update(amount=D(500))
    assert LedgerAdjustment.objects.get(pk=adjustment.pk).status == AdjustmentStatus.PENDING


@pytest.mark.django_db
def test_trade_leaves_are_never_negative(market, buyer, seller):
    ask = sim.place(seller, market, "SELL", "1", "100")
    bid = OrderFactory(market=market, account=buyer)
    with refused("trade_remaining_non_negative|Cannot"):
        sql(
            "INSERT INTO exchange_trade (market_id, sequence, maker_order_id, taker_order_id,"
            " buyer_id, seller_id, aggressor_side, price, quantity, quote_quantity, maker_fee,"
            " taker_fee, maker_remaining, taker_remaining, settlement_status, executed_at)"
            " VALUES (%s, 1, %s, %s, %s, %s, 'BUY', 100, 1, 100, 0, 0, -1, 0, 'PENDING', now())",
            [market.pk, ask.pk, bid.pk, buyer.pk, seller.pk],
        )


@pytest.mark.django_db(transaction=True)
def test_one_unbalanced_transaction_among_many_in_one_insert_is_refused(quote):
    available, vault = accounts(quote, AccountFactory())
    values = ",".join(f"('DEPOSIT', 'many-{n}', '')" for n in range(50))

    def insert_fifty_one_short() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO portfolio_ledgertransaction (kind, idempotency_key, description)"
                f" VALUES {values} RETURNING id"
            )
            txns = [row[0] for row in cursor.fetchall()]
            legs = [(t, vault.pk, -10) for t in txns] + [(t, available.pk, 10) for t in txns]
            legs[-1] = (txns[-1], available.pk, 9)  # the last one is a unit short
            cursor.executemany(
                "INSERT INTO portfolio_posting (transaction_id, ledger_account_id, amount)"
                " VALUES (%s, %s, %s)",
                legs,
            )

    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        insert_fifty_one_short()
    assert not LedgerTransaction.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_transaction_may_get_its_postings_in_later_statements(quote):
    available, vault = accounts(quote, AccountFactory())
    with transaction.atomic():
        post("DEPOSIT", "leg-by-leg", (vault, "-100"), (available, "100"))
    assert LedgerAccount.objects.get(pk=available.pk).balance == D(100)
    assert not LedgerCheck.objects.exists()  # each check removes itself once passed


@pytest.mark.django_db(transaction=True)
def test_a_queued_balance_check_cannot_be_removed_or_changed(quote):
    available, vault = accounts(quote, AccountFactory())
    for statement in (
        "DELETE FROM portfolio_ledgercheck",
        "UPDATE portfolio_ledgercheck SET transaction_ids = '{}'",
    ):
        with pytest.raises(DatabaseError, match="Cannot"), transaction.atomic():  # noqa: PT012
            post("DEPOSIT", "dodge", (vault, "-100"), (available, "99"))
            sql(statement)  # dodging the check queued by the line above
    assert not LedgerTransaction.objects.exists()


@pytest.mark.django_db
def test_entries_post_refuses_to_go_on_when_a_posting_did_not_find_its_transaction(
    quote, monkeypatch
):
    """A ledger transaction and its postings are written by one statement, each posting
    finding its transaction by key; one that did not would vanish without an error
    there, so ``entries_post`` counts them."""
    from portfolio.services import ledger

    available, vault = accounts(quote, AccountFactory())
    entry = ledger.Entry(
        kind="DEPOSIT",
        idempotency_key="chain:0xdef:1",
        legs=[ledger.Leg(vault, D("-5")), ledger.Leg(available, D("5"))],
    )
    dropping = ledger._ENTRIES_INSERT.replace(
        "JOIN t ON t.idempotency_key = v.key", "JOIN t ON t.idempotency_key = v.key AND v.n = 1"
    )
    assert dropping != ledger._ENTRIES_INSERT
    monkeypatch.setattr(ledger, "_ENTRIES_INSERT", dropping)
    with pytest.raises(ledger.LedgerError, match="1 postings written of 2"), transaction.atomic():
        ledger.entries_post([entry])
    assert not LedgerTransaction.objects.filter(idempotency_key="chain:0xdef:1").exists()


def test_a_withdrawal_finer_than_its_token_moves_is_refused_by_the_database(quote, base, buyer):
    # USDC moves in steps of 10^-6, an 18-decimal token in the ledger's 10^-8.
    def withdrawal(asset, amount: str, key: str) -> VaultOperation:
        return VaultOperation.objects.create(
            account=buyer,
            asset=asset,
            kind="WITHDRAWAL",
            status="REQUESTED",
            amount=Decimal(amount),
            idempotency_key=key,
            destination_address="0x" + "ab" * 20,
        )

    with refused("withdrawal of 1.00000010 is finer than its token moves"):
        withdrawal(quote, "1.0000001", "w-1")
    assert withdrawal(quote, "1.000001", "w-2").pk
    assert withdrawal(base, "0.00000001", "w-3").pk


def _deposit_row(account, asset, amount: str, **fields) -> VaultOperation:
    return VaultOperation.objects.create(
        account=account,
        asset=asset,
        kind="DEPOSIT",
        status="COMPLETED",
        amount=Decimal(amount),
        idempotency_key=fields.pop("key", "d-1"),
        tx_hash=fields.pop("tx_hash", "0x" + "ab" * 32),
        log_index=0,
        completed_at=timezone.now(),
        **fields,
    )


def test_a_deposit_finer_than_its_token_moves_is_refused_by_the_database(quote, buyer):
    with refused("deposit of 1.00000010 is finer than its token moves"):
        _deposit_row(buyer, quote, "1.0000001")
    assert _deposit_row(buyer, quote, "1.000001").pk


@pytest.mark.parametrize("tx_hash", ["ab" * 32, "0x" + "AB" * 32, "0x" + "ab" * 31, "0xzz"])
def test_a_chain_transaction_hash_has_one_spelling(quote, buyer, tx_hash):
    with refused("vaultop_tx_hash_format"):
        _deposit_row(buyer, quote, "1", tx_hash=tx_hash)


def test_a_recorded_chain_reference_never_changes(quote, buyer):
    deposit = _deposit_row(buyer, quote, "1")
    for change in ({"tx_hash": "0x" + "cd" * 32}, {"log_index": 1}, {"block_number": 9}):
        with refused("chain reference of vault operation"):
            VaultOperation.objects.filter(pk=deposit.pk).update(**change)
    VaultOperation.objects.filter(pk=deposit.pk).update(balance_after=Decimal(1))


@pytest.mark.parametrize("status", ["APPROVED", "PROCESSING", "COMPLETED", "REJECTED"])
def test_a_withdrawal_is_created_requested(quote, buyer, status):
    """Inserted further along, a withdrawal would be paid from funds nobody held for
    it: the services would process and complete it out of the trader's order holds."""
    with refused(f"withdrawals are created REQUESTED, not {status}"):
        VaultOperation.objects.create(
            account=buyer,
            asset=quote,
            kind="WITHDRAWAL",
            status=status,
            amount=Decimal(100),
            idempotency_key="w-1",
            destination_address="0x" + "ab" * 20,
            reason="-" if status == "REJECTED" else "",
            completed_at=timezone.now() if status == "COMPLETED" else None,
        )


def test_an_adjustment_is_created_pending(quote, buyer, staff, other_staff):
    with refused("adjustments are created PENDING, not POSTED"):
        LedgerAdjustment.objects.create(
            account=buyer,
            asset=quote,
            amount=Decimal(500),
            reason="goodwill",
            requested_by=staff,
            status=AdjustmentStatus.POSTED,
            decided_by=other_staff,
            decided_at=timezone.now(),
        )


def test_a_ledger_account_opens_empty(quote):
    with refused("ledger account opened holding 1000000"):
        LedgerAccount.objects.create(
            kind=LedgerAccountKind.AVAILABLE,
            asset=quote,
            owner=AccountFactory(),
            balance=Decimal(1_000_000),
        )
    with refused("balances come only from postings"):
        sql(
            "INSERT INTO portfolio_ledgeraccount (kind, asset_id, owner_id, balance, created_at,"
            " updated_at) VALUES ('AVAILABLE', %s, %s, 5000, now(), now())",
            [quote.pk, AccountFactory().pk],
        )


def test_a_hold_posting_is_in_the_asset_its_order_holds(market, buyer, seller):
    """A buy holds quote, a sell base: a hold booked in the other asset would pass for
    the order's hold while backing nothing it could cost."""
    sim.deposit(buyer, market.base, "200")
    buy = sim.place(buyer, market, "BUY", "1", "100")
    base_available, base_held = (
        LedgerAccount.objects.get_or_create(kind=kind, asset=market.base, owner=buyer)[0]
        for kind in (LedgerAccountKind.AVAILABLE, LedgerAccountKind.HELD)
    )
    with refused("in the asset the order holds"):
        post("HOLD", "buy-holds-base", (base_available, "-100"), (base_held, "100", buy))
    sell = sim.place(seller, market, "SELL", "1", "100")
    sim.deposit(seller, market.quote, "10")
    quote_available, quote_held = (
        LedgerAccount.objects.get_or_create(kind=kind, asset=market.quote, owner=seller)[0]
        for kind in (LedgerAccountKind.AVAILABLE, LedgerAccountKind.HELD)
    )
    with refused("in the asset the order holds"):
        post("HOLD", "sell-holds-quote", (quote_available, "-1"), (quote_held, "1", sell))


@pytest.mark.django_db(transaction=True)
def test_postings_added_after_an_early_balance_check_are_checked_too(quote):
    """A client may run the queued balance check early (SET CONSTRAINTS ALL IMMEDIATE);
    postings added to the same ledger transaction afterwards are checked as well."""
    available, vault = accounts(quote, AccountFactory())

    def after_an_early_check(key: str, *added: tuple) -> None:
        with transaction.atomic():
            txn = post("DEPOSIT", key, (vault, "-100"), (available, "100"))
            sql("SET CONSTRAINTS ALL IMMEDIATE")  # the queued check runs now, and passes
            Posting.objects.bulk_create(
                Posting(transaction=txn, ledger_account=account, amount=D(amount))
                for account, amount in added
            )

    with pytest.raises(DatabaseError, match="does not balance"):
        after_an_early_check("early-check", (available, "1000000"))
    assert LedgerAccount.objects.get(pk=available.pk).balance == 0
    # Balanced, the same steps commit, and leave no check queued.
    after_an_early_check("early-check-2", (available, "1"), (vault, "-1"))
    assert LedgerAccount.objects.get(pk=available.pk).balance == 101
    assert not LedgerCheck.objects.exists()


def test_a_statement_writing_transactions_and_postings_queues_one_balance_check(market, buyer):
    """The ledger services write an entry's transaction and postings in one statement:
    one check is queued for them, not one by each table's trigger."""
    from portfolio.services.ledger import Entry, Leg, entries_post

    available, vault = (
        LedgerAccount.objects.get_or_create(kind=kind, asset=market.quote, owner=owner)[0]
        for kind, owner in ((LedgerAccountKind.AVAILABLE, buyer), (LedgerAccountKind.VAULT, None))
    )
    before = LedgerCheck.objects.count()
    entries_post(
        [
            Entry(
                kind="DEPOSIT",
                idempotency_key=f"one-check-{n}",
                legs=[Leg(vault, -D(1)), Leg(available, D(1))],
            )
            for n in range(3)
        ]
    )
    assert LedgerCheck.objects.count() == before + 1
    sim.place(buyer, market, "BUY", "1", "100")  # an order and its hold, one statement
    assert LedgerCheck.objects.count() == before + 2
