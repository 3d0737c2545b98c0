"""Balances, ledger history, deposits and withdrawal requests over the API."""

from decimal import Decimal

import pytest

from exchange.matcher.market import MarketMatcher
from portfolio.models import VaultOperation, VaultOperationStatus

D = Decimal
WITHDRAWALS = "/api/v1/withdrawals/"
DEST = "0x" + "ab" * 20


def withdrawal(client, **fields):
    body = {
        "asset": "USDC",
        "amount": "100",
        "destination_address": DEST,
        "client_request_id": "w-1",
    } | fields
    return client.post(WITHDRAWALS, body, format="json")


def test_balances_show_available_and_held(api, alice, market):
    api.post("/api/v1/orders/", alice.order(market, price="100", quantity="2"), format="json")
    balances = {b["asset"]: b for b in api.get("/api/v1/balances/").json()}
    usdc = balances["USDC"]
    assert D(usdc["held"]) == D("200.1")  # 200 and the 5 bps taker fee reserve
    assert D(usdc["available"]) == D("10000") - D("200.1")
    assert D(usdc["total"]) == D("10000")
    assert D(balances["ETH"]["available"]) == 10


def test_the_ledger_lists_every_movement_newest_first(api, alice, market):
    api.post("/api/v1/orders/", alice.order(market, price="100", quantity="1"), format="json")
    postings = api.get("/api/v1/ledger/", {"asset": "USDC"}).json()["results"]
    kinds = [(p["kind"], p["bucket"], D(p["amount"])) for p in postings]
    assert kinds[0][0] == "HOLD"
    assert {k[1] for k in kinds[:2]} == {"AVAILABLE", "HELD"}
    assert ("DEPOSIT", "AVAILABLE", D("10000")) in kinds
    assert all(p["asset"] == "USDC" for p in postings)


def test_deposits_are_listed(api, alice):
    deposits = api.get("/api/v1/deposits/").json()["results"]
    assert sorted((d["asset"], D(d["amount"])) for d in deposits) == [
        ("ETH", D("10")),
        ("USDC", D("10000")),
    ]
    assert all(d["kind"] == "DEPOSIT" and d["status"] == "COMPLETED" for d in deposits)


def test_a_withdrawal_request_holds_the_amount(api, alice):
    response = withdrawal(api)
    assert response.status_code == 201, response.json()
    assert response.json()["status"] in {"REQUESTED", "APPROVED"}
    usdc = next(b for b in api.get("/api/v1/balances/").json() if b["asset"] == "USDC")
    assert D(usdc["held"]) == 100
    assert [w["id"] for w in api.get(WITHDRAWALS).json()["results"]] == [response.json()["id"]]


def test_a_retried_withdrawal_returns_the_original(api, alice):
    first = withdrawal(api)
    again = withdrawal(api)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert VaultOperation.objects.filter(kind="WITHDRAWAL").count() == 1
    conflict = withdrawal(api, amount="101")
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "IDEMPOTENCY_CONFLICT"


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"amount": "100000"}, 422, "INSUFFICIENT_FUNDS"),
        ({"asset": "DOGE"}, 404, "UNKNOWN_ASSET"),
        ({"amount": "-1"}, 400, "VALIDATION_ERROR"),
        ({"amount": "0"}, 400, "VALIDATION_ERROR"),
        ({"amount": "NaN"}, 400, "VALIDATION_ERROR"),
        ({"amount": "1.123456789"}, 400, "VALIDATION_ERROR"),
        ({"amount": "1.0000001"}, 400, "INVALID_AMOUNT"),  # USDC has 6 decimals on chain
        ({"amount": "١٠"}, 400, "VALIDATION_ERROR"),  # Arabic-Indic digits
        ({"amount": "１０"}, 400, "VALIDATION_ERROR"),  # full-width digits
        ({"amount": "1_0"}, 400, "VALIDATION_ERROR"),
        ({"destination_address": "0x12"}, 400, "VALIDATION_ERROR"),
        ({"client_request_id": ""}, 400, "VALIDATION_ERROR"),
    ],
)
def test_bad_withdrawals_are_refused_and_move_nothing(api, alice, fields, status, code):
    response = withdrawal(api, **fields)
    assert response.status_code == status, response.json()
    assert response.json()["code"] == code
    assert not VaultOperation.objects.filter(kind="WITHDRAWAL").exists()


def test_a_frozen_account_cannot_withdraw(api, alice):
    alice.account.status = "FROZEN"
    alice.account.save(update_fields=["status"])
    response = withdrawal(api)
    assert response.status_code == 403
    assert response.json()["code"] == "WITHDRAWAL_REFUSED"
    assert not VaultOperation.objects.filter(status=VaultOperationStatus.REQUESTED).exists()


def test_traders_see_only_their_own_money(api, bob_api, alice, bob, market):
    withdrawal(api)
    api.post(
        "/api/v1/orders/", alice.order(market, side="BUY", price="100", quantity="1"), format="json"
    )
    bob_api.post(
        "/api/v1/orders/", bob.order(market, side="SELL", price="100", quantity="1"), format="json"
    )
    MarketMatcher(market).run_batch()
    bob_ledger = bob_api.get("/api/v1/ledger/").json()["results"]
    alice_ledger = api.get("/api/v1/ledger/").json()["results"]
    assert not {p["id"] for p in bob_ledger} & {p["id"] for p in alice_ledger}
    assert bob_api.get(WITHDRAWALS).json()["results"] == []
    bob_deposits = {d["id"] for d in bob_api.get("/api/v1/deposits/").json()["results"]}
    alice_deposits = {d["id"] for d in api.get("/api/v1/deposits/").json()["results"]}
    assert not bob_deposits & alice_deposits
