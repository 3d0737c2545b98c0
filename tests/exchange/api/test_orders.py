"""The order endpoints: signed placement and every way it is refused, idempotent
retries, lookups, amend, cancel, lists and fills."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from compliance.models import JurisdictionRule, KycTierLimit
from exchange.matcher.market import MarketMatcher
from exchange.models import AccountStatus, CommandKind, MarketStatus, Order, OrderCommand
from exchange.services.archiving import orders_archive
from exchange.services.markets import market_halt, market_resume
from portfolio.models import LedgerTransaction
from tests.api_support import Wallet, key_client, signed_amend
from tests.portfolio import sim

ORDERS = "/api/v1/orders/"
D = Decimal


def post(client, body, path=ORDERS):
    return client.post(path, body, format="json")


def assert_error(response, status, code):
    body = response.json()
    assert response.status_code == status, body
    assert body["code"] == code, body
    assert body["message"]
    return body


def nothing_written():
    return not Order.objects.exists() and not OrderCommand.objects.exists()


# --- placement ------------------------------------------------------------------------


def test_a_signed_order_is_accepted_pending_with_its_hold_and_command(api, alice, market):
    body = alice.order(market, client_order_id="first", price="101.5", quantity="2")
    response = post(api, body)
    assert response.status_code == 201, response.json()
    order = response.json()
    assert order["status"] == "PENDING"
    assert order["client_order_id"] == "first"
    assert D(order["price"]) == D("101.5")
    assert D(order["quantity"]) == 2
    assert order["market"] == market.symbol
    assert order["nonce"] == body["nonce"]
    row = Order.objects.get(pk=order["id"])
    assert row.account == alice.account
    assert row.signature == body["signature"]
    assert order["order_hash"] == row.order_hash
    assert OrderCommand.objects.filter(order=row, kind=CommandKind.PLACE).count() == 1
    assert LedgerTransaction.objects.filter(order=row).exists()  # the hold


def test_the_response_shows_the_order_after_matching_once_the_matcher_answered(
    api, alice, bob, bob_api, market
):
    post(bob_api, bob.order(market, side="SELL", price="100", quantity="1"))
    MarketMatcher(market).run_batch()
    response = post(api, alice.order(market, side="BUY", price="100", quantity="1"))
    assert response.json()["status"] == "PENDING"  # no matcher answered within the wait
    MarketMatcher(market).run_batch()
    got = api.get(f"{ORDERS}{response.json()['id']}/").json()
    assert got["status"] == "FILLED"
    assert D(got["average_price"]) == 100


def test_a_client_supplied_hash_must_be_the_orders(api, alice, market):
    body = alice.order(market)
    response = post(api, body | {"order_hash": "0x" + "ab" * 32})
    assert_error(response, 401, "ORDER_HASH_MISMATCH")
    assert nothing_written()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("market", "OTHER-USDC"),
        ("client_order_id", "someone-else"),
        ("side", "SELL"),
        ("type", "MARKET"),
        ("time_in_force", "IOC"),
        ("price", "100.01"),
        ("quantity", "2.001"),
        ("post_only", True),
        ("self_trade_prevention", "EXPIRE_MAKER"),
        ("nonce", "999999"),
        ("account", "0x" + "11" * 20),
        ("expires_at", 4102444800),
    ],
)
def test_a_signature_over_any_other_value_of_a_field_is_refused(api, alice, market, field, value):
    body = alice.order(market)
    body["signature"] = alice.sign(body, **{field: value})
    assert_error(post(api, body), 401, "SIGNATURE_MISMATCH")
    assert nothing_written()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("client_order_id", "changed"),
        ("side", "SELL"),
        ("price", "99"),
        ("quantity", "1"),
        ("time_in_force", "GTT"),
        ("post_only", True),
        ("self_trade_prevention", "EXPIRE_BOTH"),
        ("nonce", "424242"),
        ("display_quantity", "1"),
    ],
)
def test_changing_a_signed_field_after_signing_is_refused(api, alice, market, field, value):
    body = alice.order(market) | {field: value}
    if field == "time_in_force":
        body["expires_at"] = int((timezone.now() + timedelta(hours=1)).timestamp())
    assert_error(post(api, body), 401, "SIGNATURE_MISMATCH")
    assert nothing_written()


def test_an_order_signed_by_another_wallet_is_refused(api, alice, bob, market):
    body = alice.order(market)
    body["signature"] = bob.sign(body, account=alice.account.wallet_address)
    assert_error(post(api, body), 401, "SIGNATURE_MISMATCH")
    assert nothing_written()


@pytest.mark.parametrize("signature", ["0x" + "00" * 65, "0x" + "ff" * 65])
def test_a_signature_that_is_no_signature_is_refused(api, alice, market, signature):
    body = alice.order(market) | {"signature": signature}
    response = post(api, body)
    assert response.status_code == 401, response.json()
    assert response.json()["code"] in {"INVALID_SIGNATURE", "SIGNATURE_MISMATCH"}
    assert nothing_written()


def test_a_reused_nonce_is_refused_and_changes_nothing(api, alice, market):
    assert post(api, alice.order(market, nonce="77")).status_code == 201
    assert_error(post(api, alice.order(market, nonce="77")), 409, "NONCE_REUSED")
    assert Order.objects.count() == 1


def test_the_same_client_order_id_returns_the_original_order(api, alice, market):
    body = alice.order(market, client_order_id="retry-me")
    first = post(api, body)
    again = post(api, body)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    # A retry that was re-signed with a new nonce is still the same order.
    resigned = post(api, alice.order(market, client_order_id="retry-me"))
    assert resigned.status_code == 200
    assert resigned.json()["id"] == first.json()["id"]
    assert Order.objects.count() == 1
    assert OrderCommand.objects.count() == 1


def test_a_gtt_order_past_its_expiry_is_refused(api, alice, market):
    expired = int((timezone.now() - timedelta(seconds=5)).timestamp())
    body = alice.order(market, time_in_force="GTT", expires_at=expired)
    assert_error(post(api, body), 400, "ALREADY_EXPIRED")
    assert nothing_written()


def test_a_gtt_order_with_a_future_expiry_is_accepted(api, alice, market):
    expires = int((timezone.now() + timedelta(hours=1)).timestamp())
    response = post(api, alice.order(market, time_in_force="GTT", expires_at=expires))
    assert response.status_code == 201, response.json()
    stored = Order.objects.get(pk=response.json()["id"]).expires_at
    assert stored == datetime.fromtimestamp(expires, tz=UTC)


def test_an_order_beyond_the_balance_is_refused_and_holds_nothing(api, alice, market):
    body = alice.order(market, price="100", quantity="1000")
    assert_error(post(api, body), 422, "INSUFFICIENT_FUNDS")
    assert nothing_written()


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"price": "100.001"}, "PRICE_OFF_TICK"),
        ({"quantity": "1.0001"}, "QUANTITY_OFF_LOT"),
        ({"type": "MARKET", "price": None}, "PROTECTION_PRICE_REQUIRED"),
        ({"type": "MARKET"}, "MARKET_ORDER_WITH_PRICE"),
        ({"quantity": "0.001", "price": "1"}, "BELOW_MIN_NOTIONAL"),
        ({"post_only": True, "time_in_force": "IOC"}, "POST_ONLY_NOT_ALLOWED"),
        ({"type": "STOP_LIMIT"}, "MISSING_STOP_PRICE"),
        (
            {"side": "SELL", "type": "MARKET", "price": None, "time_in_force": "FOK"},
            "INVALID_TIME_IN_FORCE",
        ),
        ({"type": "STOP_LIMIT", "stop_price": "101", "post_only": True}, "POST_ONLY_NOT_ALLOWED"),
    ],
)
def test_orders_breaking_the_market_rules_are_refused(api, alice, market, fields, code):
    assert_error(post(api, alice.order(market, **fields)), 400, code)
    assert nothing_written()


# --- malformed input: a 4xx that names the field, never a 500 -------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", "NaN"),
        ("price", "Infinity"),
        ("price", "-Infinity"),
        ("price", "-1"),
        ("price", "0"),
        ("price", "1e400"),
        ("price", "123456789012345678901234567890"),
        ("price", "100.123456789"),
        ("price", "abc"),
        ("price", True),
        ("price", [1]),
        ("price", {"a": 1}),
        ("quantity", "0"),
        ("quantity", "-2"),
        ("quantity", "0.000000001"),
        ("quantity", "NaN"),
        ("side", "HOLD"),
        ("side", 1),
        ("type", "ICEBERG"),
        ("time_in_force", "FOREVER"),
        ("nonce", "-1"),
        ("nonce", "1.5"),
        ("nonce", str(2**256)),
        ("nonce", True),
        ("nonce", "0x10"),
        ("client_order_id", ""),
        ("client_order_id", "has space"),
        ("client_order_id", "x" * 65),
        ("signature", "0x1234"),
        ("signature", 12),
        ("expires_at", -5),
        ("expires_at", "tomorrow"),
        ("expires_at", 10**30),
        ("expires_at", 2**40),
        ("expires_at", 253_402_300_800),
        ("post_only", "maybe"),
        ("market", "x" * 200),
    ],
)
def test_malformed_fields_are_refused_with_the_field_named(api, alice, market, field, value):
    body = alice.order(market) | {field: value}
    response = post(api, body)
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert field in error["details"], error
    assert nothing_written()


@pytest.mark.parametrize(
    "missing", ["market", "client_order_id", "side", "type", "nonce", "signature"]
)
def test_a_missing_required_field_is_named(api, alice, market, missing):
    body = alice.order(market)
    del body[missing]
    error = assert_error(post(api, body), 400, "VALIDATION_ERROR")
    assert missing in error["details"]


def test_an_unknown_market_is_404(api, alice, market):
    body = alice.order(market) | {"market": "NOPE-USDC"}
    body["signature"] = alice.sign(body)
    assert_error(post(api, body), 404, "UNKNOWN_MARKET")


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        ("{not json", "application/json"),
        ('{"price": NaN}', "application/json"),
        ('{"price": Infinity}', "application/json"),
        ("[1, 2, 3]", "application/json"),
        ('"a string"', "application/json"),
        ("", "application/json"),
    ],
)
def test_bodies_that_are_not_an_order_object_are_400(api, raw, content_type):
    response = api.post(ORDERS, raw, content_type=content_type)
    assert 400 <= response.status_code < 500
    body = response.json()
    assert body["code"] in {"MALFORMED_REQUEST", "VALIDATION_ERROR"}
    assert nothing_written()


def test_a_body_that_is_not_json_is_415(api):
    response = api.post(ORDERS, "side=BUY", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_an_oversized_body_is_413(api, alice, market, settings):
    body = alice.order(market) | {"padding": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}
    response = api.post(ORDERS, json.dumps(body), content_type="application/json")
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert nothing_written()


# --- compliance gates -----------------------------------------------------------------


def test_a_frozen_account_may_not_place(api, alice, market):
    alice.account.status = AccountStatus.FROZEN
    alice.account.save(update_fields=["status"])
    assert_error(post(api, alice.order(market)), 403, "ACCOUNT_FROZEN")
    assert nothing_written()


def test_an_account_without_kyc_may_not_trade(market, quote):
    wallet = Wallet.create(kyc_tier=0)
    client = key_client(wallet.account)
    assert_error(post(client, wallet.order(market)), 403, "KYC_REQUIRED")


def test_a_restricted_jurisdiction_may_not_trade_the_market(api, alice, market):
    JurisdictionRule.objects.create(country="GB", market=market, reason="not licensed")
    error = assert_error(post(api, alice.order(market)), 403, "JURISDICTION_RESTRICTED")
    assert "not licensed" in error["message"]


def test_a_jurisdiction_rule_for_every_market_applies_too(api, alice, market):
    JurisdictionRule.objects.create(country="GB", market=None, reason="sanctioned")
    assert_error(post(api, alice.order(market)), 403, "JURISDICTION_RESTRICTED")


def test_the_kyc_tier_caps_the_size_of_an_order(api, alice, market, quote):
    KycTierLimit.objects.create(kyc_tier=1, quote=quote, max_order_notional=D("150"))
    assert post(api, alice.order(market, price="100", quantity="1.5")).status_code == 201
    assert_error(
        post(api, alice.order(market, price="100", quantity="1.6")), 403, "KYC_LIMIT_EXCEEDED"
    )


def test_a_halted_market_takes_no_orders(api, alice, market):
    market.status = MarketStatus.HALTED
    market.save(update_fields=["status"])
    assert_error(post(api, alice.order(market)), 400, "MARKET_HALTED")


# --- batch ----------------------------------------------------------------------------


def test_a_batch_places_each_order_on_its_own(api, alice, market):
    good = alice.order(market, client_order_id="b-1")
    reused = alice.order(market, client_order_id="b-2", nonce=good["nonce"])
    other = alice.order(market, client_order_id="b-3", price="99")
    response = post(api, {"orders": [good, reused, other]}, f"{ORDERS}batch/")
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [True, False, True]
    assert results[1]["code"] == "NONCE_REUSED"
    assert results[0]["order"]["client_order_id"] == "b-1"
    assert Order.objects.count() == 2


def test_a_batch_order_that_fails_unexpectedly_is_answered_on_its_own(
    api, alice, market, monkeypatch
):
    from exchange.api import orders as views

    original = views._place

    def fails_for_b2(account, data):
        if data["client_order_id"] == "b-2":
            raise RuntimeError("the database went away")
        return original(account, data)

    monkeypatch.setattr(views, "_place", fails_for_b2)
    batch = [alice.order(market, client_order_id=f"b-{i}", price="99") for i in (1, 2, 3)]
    response = post(api, {"orders": batch}, f"{ORDERS}batch/")
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [True, False, True]
    assert results[1]["code"] == "INTERNAL_ERROR"
    # The orders before and after it stand, and the answer says so.
    assert sorted(Order.objects.values_list("client_order_id", flat=True)) == ["b-1", "b-3"]


@pytest.mark.parametrize("orders", [[], [{"market": "x"}], "nope", [1] * 3])
def test_a_malformed_batch_is_refused_whole(api, alice, market, orders):
    response = post(api, {"orders": orders}, f"{ORDERS}batch/")
    assert_error(response, 400, "VALIDATION_ERROR")
    assert nothing_written()


def test_a_batch_holds_at_most_twenty(api, alice, market):
    orders = [alice.order(market) for _ in range(21)]
    assert_error(post(api, {"orders": orders}, f"{ORDERS}batch/"), 400, "VALIDATION_ERROR")
    assert nothing_written()


# --- lookups, cancel, amend -----------------------------------------------------------


def test_an_order_is_found_by_id_and_by_client_order_id(api, alice, market):
    order = post(api, alice.order(market, client_order_id="find-me")).json()
    assert api.get(f"{ORDERS}{order['id']}/").json()["client_order_id"] == "find-me"
    assert api.get(f"{ORDERS}by-client-id/find-me/").json()["id"] == order["id"]
    assert_error(api.get(f"{ORDERS}by-client-id/nope/"), 404, "UNKNOWN_ORDER")
    assert_error(api.get(f"{ORDERS}999999999/"), 404, "UNKNOWN_ORDER")


def test_cancel_by_id_asks_the_matcher_and_the_order_ends_cancelled(api, alice, market):
    order = post(api, alice.order(market)).json()
    MarketMatcher(market).run_batch()
    response = api.delete(f"{ORDERS}{order['id']}/")
    assert response.status_code == 202, response.json()  # the matcher has not run yet
    assert OrderCommand.objects.filter(kind=CommandKind.CANCEL).count() == 1
    MarketMatcher(market).run_batch()
    assert api.get(f"{ORDERS}{order['id']}/").json()["status"] == "CANCELLED"
    assert_error(api.delete(f"{ORDERS}{order['id']}/"), 409, "ORDER_CLOSED")


def test_an_archived_order_is_still_found_and_its_ids_stay_taken(api, bob_api, alice, market):
    body = alice.order(market, client_order_id="old-one", nonce="4242")
    order = post(api, body).json()
    MarketMatcher(market).run_batch()
    api.delete(f"{ORDERS}{order['id']}/")
    MarketMatcher(market).run_batch()
    sim.backdate(Order.objects.get(pk=order["id"]), timezone.now() - timedelta(days=400))
    assert orders_archive(done_before=timezone.now() - timedelta(days=1), limit=10) == 1
    assert not Order.objects.filter(pk=order["id"]).exists()

    for path in (f"{ORDERS}{order['id']}/", f"{ORDERS}by-client-id/old-one/"):
        found = api.get(path)
        assert found.status_code == 200, found.json()
        assert (found.json()["id"], found.json()["status"]) == (order["id"], "CANCELLED")
        assert_error(bob_api.get(path), 404, "UNKNOWN_ORDER")
        assert_error(api.delete(path), 409, "ORDER_CLOSED")
    amend = signed_amend(alice, order, price="99")
    assert_error(post(api, amend, f"{ORDERS}{order['id']}/amend/"), 409, "ORDER_CLOSED")
    # A retry of the same request answers with the archived original; a new order
    # cannot take its nonce.
    retried = post(api, body)
    assert (retried.status_code, retried.json()["id"]) == (200, order["id"])
    # Whatever today's checks would say of the request (the market is halted now).
    market_halt(market=market)
    MarketMatcher(market).run_batch()
    retried = post(api, body)
    assert (retried.status_code, retried.json()["id"]) == (200, order["id"])
    assert_error(post(api, alice.order(market, nonce="4242")), 400, "MARKET_HALTED")
    market.refresh_from_db()
    market_resume(market=market)
    MarketMatcher(market).run_batch()
    assert_error(post(api, alice.order(market, nonce="4242")), 409, "NONCE_REUSED")
    assert Order.objects.count() == 0
    assert OrderCommand.objects.filter(kind=CommandKind.PLACE).count() == 1


def test_cancel_by_client_order_id(api, alice, market):
    post(api, alice.order(market, client_order_id="gone"))
    MarketMatcher(market).run_batch()
    assert api.delete(f"{ORDERS}by-client-id/gone/").status_code == 202
    MarketMatcher(market).run_batch()
    assert api.get(f"{ORDERS}by-client-id/gone/").json()["status"] == "CANCELLED"


def test_amend_changes_a_resting_order(api, alice, market):
    order = post(api, alice.order(market, price="100", quantity="2")).json()
    MarketMatcher(market).run_batch()
    amend = signed_amend(alice, order, price="101", quantity="3")
    response = post(api, amend, f"{ORDERS}{order['id']}/amend/")
    assert response.status_code == 202, response.json()
    MarketMatcher(market).run_batch()
    amended = api.get(f"{ORDERS}{order['id']}/").json()
    assert D(amended["price"]) == 101
    assert D(amended["quantity"]) == 3
    command = OrderCommand.objects.get(kind=CommandKind.AMEND)
    assert command.payload == {
        "price": "101.00000000",
        "quantity": "3.00000000",
        "nonce": amend["nonce"],
        "signature": amend["signature"],
    }


def test_a_stop_that_has_not_fired_is_not_amendable(api, alice, market):
    order = post(api, alice.order(market, type="STOP_LIMIT", price="99", stop_price="101")).json()
    MarketMatcher(market).run_batch()
    assert api.get(f"{ORDERS}{order['id']}/").json()["status"] == "UNTRIGGERED"
    response = post(api, signed_amend(alice, order, price="98"), f"{ORDERS}{order['id']}/amend/")
    assert_error(response, 409, "NOT_AMENDABLE")
    assert not OrderCommand.objects.filter(kind=CommandKind.AMEND).exists()


UNSIGNED = {"nonce": "1", "signature": "0x" + "1b" * 65}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "VALIDATION_ERROR"),
        (UNSIGNED, "VALIDATION_ERROR"),  # neither price nor quantity
        ({"price": "101"}, "VALIDATION_ERROR"),  # no signature, no nonce
        ({"price": "-1"} | UNSIGNED, "VALIDATION_ERROR"),
        ({"quantity": "NaN"} | UNSIGNED, "VALIDATION_ERROR"),
        ({"price": "101", "nonce": "-1", "signature": UNSIGNED["signature"]}, "VALIDATION_ERROR"),
    ],
)
def test_malformed_amends_are_refused(api, alice, market, body, code):
    order = post(api, alice.order(market)).json()
    MarketMatcher(market).run_batch()
    response = post(api, body, f"{ORDERS}{order['id']}/amend/")
    assert_error(response, 400, code)
    assert not OrderCommand.objects.filter(kind=CommandKind.AMEND).exists()


def test_an_amend_off_the_markets_grid_is_refused(api, alice, market):
    order = post(api, alice.order(market)).json()
    MarketMatcher(market).run_batch()
    response = post(
        api, signed_amend(alice, order, price="100.001"), f"{ORDERS}{order['id']}/amend/"
    )
    assert_error(response, 400, "PRICE_OFF_TICK")
    assert not OrderCommand.objects.filter(kind=CommandKind.AMEND).exists()


def test_an_amend_is_signed_by_the_orders_wallet_over_its_values(api, alice, bob, market):
    order = post(api, alice.order(market, price="100", quantity="2")).json()
    other = post(api, alice.order(market, price="99", quantity="1")).json()
    MarketMatcher(market).run_batch()
    url = f"{ORDERS}{order['id']}/amend/"
    forged = {
        # A credential that may trade, without the wallet: another wallet's signature.
        "another wallet": signed_amend(
            bob, order, price="1", signed_instead={"account": alice.account.wallet_address}
        ),
        # The wallet signed 101; the request says 1.
        "another price": signed_amend(alice, order, price="1", signed_instead={"price": "101"}),
        "another quantity": signed_amend(
            alice, order, quantity="20", signed_instead={"quantity": "3"}
        ),
        # Signed for Alice's other order, sent for this one.
        "another order": signed_amend(
            alice, order, price="1", signed_instead={"order_hash": other["order_hash"]}
        ),
    }
    for case, body in forged.items():
        assert_error(post(api, body, url), 401, "SIGNATURE_MISMATCH"), case
    assert not OrderCommand.objects.filter(kind=CommandKind.AMEND).exists()

    amend = signed_amend(alice, order, price="101")
    assert post(api, amend, url).status_code == 202
    # The same signed change again, or the nonce on another change, is refused.
    assert_error(post(api, amend, url), 409, "NONCE_REUSED")
    reused = signed_amend(alice, other, price="98", nonce=amend["nonce"])
    assert_error(post(api, reused, f"{ORDERS}{other['id']}/amend/"), 409, "NONCE_REUSED")
    assert OrderCommand.objects.filter(kind=CommandKind.AMEND).count() == 1


def test_cancel_all_cancels_every_open_order_of_the_caller_only(api, bob_api, alice, bob, market):
    for price in ("98", "99"):
        post(api, alice.order(market, price=price))
    post(bob_api, bob.order(market, price="97"))
    MarketMatcher(market).run_batch()
    response = post(api, {}, f"{ORDERS}cancel-all/")
    assert response.status_code == 202, response.json()
    assert response.json() == [{"market": market.symbol}]
    MarketMatcher(market).run_batch()
    statuses = {o.account_id: set() for o in Order.objects.all()}
    for o in Order.objects.all():
        statuses[o.account_id].add(o.status)
    assert statuses[alice.account.pk] == {"CANCELLED"}
    assert statuses[bob.account.pk] == {"OPEN"}


def test_cancel_all_in_an_unknown_market_is_404(api):
    assert_error(post(api, {"market": "NOPE"}, f"{ORDERS}cancel-all/"), 404, "UNKNOWN_MARKET")


# --- lists ----------------------------------------------------------------------------


def test_history_pages_with_a_cursor_newest_first_and_filters(api, alice, market):
    ids = [post(api, alice.order(market, price=str(90 + i))).json()["id"] for i in range(5)]
    first = api.get(ORDERS, {"limit": 2}).json()
    assert [o["id"] for o in first["results"]] == ids[::-1][:2]
    second = api.get(first["next"]).json()
    assert [o["id"] for o in second["results"]] == ids[::-1][2:4]
    third = api.get(second["next"]).json()
    assert [o["id"] for o in third["results"]] == ids[:1]
    assert third["next"] is None
    assert api.get(ORDERS, {"side": "SELL"}).json()["results"] == []
    assert len(api.get(ORDERS, {"status": "PENDING"}).json()["results"]) == 5
    assert api.get(ORDERS, {"market": "NOPE"}).json()["results"] == []


@pytest.mark.parametrize(
    "params",
    [{"status": "SOMETIMES"}, {"side": "UP"}, {"since": "yesterday"}, {"limit": "x"}],
)
def test_bad_list_filters_are_400_or_ignored_never_500(api, params):
    response = api.get(ORDERS, params)
    assert response.status_code in (200, 400)
    if response.status_code == 400:
        assert response.json()["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("position", ["abc", "-1", "1.5", "٣", str(2**63), "9" * 5000])
@pytest.mark.parametrize(
    "path",
    [
        ORDERS,
        f"{ORDERS}open/",
        "/api/v1/fills/",
        "/api/v1/ledger/",
        "/api/v1/deposits/",
        "/api/v1/withdrawals/",
        "/api/v1/stats/",
    ],
)
def test_a_cursor_whose_position_is_not_an_id_is_404_never_500(api, path, position):
    import base64
    from urllib.parse import urlencode

    cursor = base64.b64encode(urlencode({"p": position}).encode()).decode()
    response = api.get(path, {"cursor": cursor})
    assert response.status_code == 404, response.content[:200]
    assert response.json()["message"] == "Invalid cursor"


def test_open_orders_leave_out_closed_ones(api, alice, market):
    keep = post(api, alice.order(market, price="99")).json()
    gone = post(api, alice.order(market, price="98")).json()
    MarketMatcher(market).run_batch()
    api.delete(f"{ORDERS}{gone['id']}/")
    MarketMatcher(market).run_batch()
    open_ids = [o["id"] for o in api.get(f"{ORDERS}open/").json()["results"]]
    assert open_ids == [keep["id"]]


def test_fills_show_the_callers_side_role_and_fee(api, bob_api, alice, bob, market):
    maker = post(bob_api, bob.order(market, side="SELL", price="100", quantity="1")).json()
    MarketMatcher(market).run_batch()
    taker = post(api, alice.order(market, side="BUY", price="100", quantity="1")).json()
    MarketMatcher(market).run_batch()
    [alice_fill] = api.get("/api/v1/fills/").json()["results"]
    [bob_fill] = bob_api.get("/api/v1/fills/").json()["results"]
    assert (alice_fill["side"], alice_fill["liquidity"]) == ("BUY", "TAKER")
    assert alice_fill["order_id"] == taker["id"]
    assert D(alice_fill["fee"]) == D("0.05")  # 5 bps of 100
    assert (bob_fill["side"], bob_fill["liquidity"]) == ("SELL", "MAKER")
    assert bob_fill["order_id"] == maker["id"]
    assert D(bob_fill["fee"]) == D("0.02")
    assert alice_fill["fee_asset"] == "USDC"
    assert (
        api.get("/api/v1/fills/", {"order_id": maker["id"]}).json()["results"][0]["id"]
        == (alice_fill["id"])
    )
    assert api.get("/api/v1/fills/", {"market": "NOPE"}).json()["results"] == []


@pytest.mark.parametrize("method", ["get", "delete", "put", "patch"])
def test_the_amend_endpoint_only_amends(api, alice, market, method):
    order = post(api, alice.order(market)).json()
    MarketMatcher(market).run_batch()
    response = getattr(api, method)(f"{ORDERS}{order['id']}/amend/")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert not OrderCommand.objects.exclude(kind=CommandKind.PLACE).exists()


def test_order_endpoints_have_their_own_stricter_limit_with_headers(api, alice, market, settings):
    prefix = f"test:rl:orders:{uuid.uuid4().hex}"
    settings.API_RATE_LIMIT_KEY_PREFIX = prefix
    high = (10_000, 60)
    settings.API_RATE_LIMITS = {
        "default": {"credential": high, "ip": high, "global": high},
        "orders": {"credential": (2, 60), "ip": high, "global": high},
    }
    first, second = (post(api, alice.order(market)) for _ in range(2))
    assert (first.status_code, second.status_code) == (201, 201)
    assert [first["RateLimit-Remaining"], second["RateLimit-Remaining"]] == ["1", "0"]
    refused = post(api, alice.order(market))
    assert_error(refused, 429, "RATE_LIMITED")
    assert int(refused["Retry-After"]) > 0
    assert Order.objects.count() == 2  # the refused order was not placed
    # Reads are another bucket: still allowed.
    assert api.get("/api/v1/balances/").status_code == 200


def test_each_order_of_a_batch_counts_against_the_order_limit(api, alice, market, settings):
    settings.API_RATE_LIMIT_KEY_PREFIX = f"test:rl:batch:{uuid.uuid4().hex}"
    high = (10_000, 60)
    settings.API_RATE_LIMITS = {
        "default": {"credential": high, "ip": high, "global": high},
        "orders": {"credential": (5, 60), "ip": high, "global": high},
    }
    batch = {"orders": [alice.order(market, price="99") for _ in range(3)]}
    placed = post(api, batch, f"{ORDERS}batch/")
    assert placed.status_code == 200, placed.json()
    assert placed["RateLimit-Remaining"] == "2"  # 5 - 3
    # Three more do not fit in the two left: refused whole, nothing placed, nothing spent.
    refused = post(api, {"orders": [alice.order(market) for _ in range(3)]}, f"{ORDERS}batch/")
    assert_error(refused, 429, "RATE_LIMITED")
    assert Order.objects.count() == 3
    assert post(api, alice.order(market)).status_code == 201
    # A batch larger than the whole limit is charged the whole limit, not refused forever.
    settings.API_RATE_LIMIT_KEY_PREFIX = f"test:rl:batch:{uuid.uuid4().hex}"
    big = post(api, {"orders": [alice.order(market) for _ in range(8)]}, f"{ORDERS}batch/")
    assert big.status_code == 200, big.json()
    assert big["RateLimit-Remaining"] == "0"
