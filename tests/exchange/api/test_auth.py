"""Signing in with the wallet, API keys and their scopes, and what clients sign."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone
from eth_account import Account as EthAccount
from rest_framework.test import APIClient

from exchange.models import Account, AccountStatus, ApiKey
from exchange.services.sessions import api_key_create
from exchange.signing import ORDER_TYPES, sign_message
from tests.api_support import Wallet, key_client


def sign_in(client: APIClient, key) -> dict:
    challenge = client.post("/api/v1/auth/challenge/", {"address": key.address}, format="json")
    assert challenge.status_code == 201, challenge.json()
    message = challenge.json()["message"]
    response = client.post(
        "/api/v1/auth/login/",
        {"message": message, "signature": sign_message(key.key, message)},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_a_new_wallet_signs_in_gets_an_account_and_a_session(db):
    key = EthAccount.create()
    session = sign_in(APIClient(), key)
    assert session["account"]["wallet_address"] == key.address.lower()
    assert session["account"]["kyc_tier"] == 0
    me = bearer(session["token"]).get("/api/v1/account/")
    assert me.status_code == 200
    assert me.json()["id"] == session["account"]["id"]
    # Signing in again finds the same account.
    assert sign_in(APIClient(), key)["account"]["id"] == session["account"]["id"]
    assert Account.objects.count() == 1


def test_the_challenge_is_an_eip4361_message_with_nonce_and_expiry(db):
    key = EthAccount.create()
    body = APIClient().post("/api/v1/auth/challenge/", {"address": key.address}, format="json")
    message = body.json()["message"]
    assert "wants you to sign in with your Ethereum account:" in message
    assert key.address.lower() in message
    assert f"Nonce: {body.json()['nonce']}" in message
    assert "Expiration Time:" in message


def _challenge(key) -> str:
    response = APIClient().post("/api/v1/auth/challenge/", {"address": key.address}, format="json")
    return response.json()["message"]


def _login(message, signature):
    return APIClient().post(
        "/api/v1/auth/login/", {"message": message, "signature": signature}, format="json"
    )


def test_a_challenge_signed_by_another_wallet_is_refused(db):
    key, other = EthAccount.create(), EthAccount.create()
    message = _challenge(key)
    response = _login(message, sign_message(other.key, message))
    assert response.status_code == 401
    assert response.json()["code"] == "SIGNATURE_MISMATCH"
    assert not Account.objects.exists()


def test_a_challenge_answers_once(db):
    key = EthAccount.create()
    message = _challenge(key)
    signature = sign_message(key.key, message)
    assert _login(message, signature).status_code == 201
    replay = _login(message, signature)
    assert replay.status_code == 401
    assert replay.json()["code"] == "LOGIN_CHALLENGE_EXPIRED"


def test_an_altered_challenge_is_refused(db):
    key = EthAccount.create()
    message = _challenge(key).replace("Version: 1", "Version: 2")
    response = _login(message, sign_message(key.key, message))
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_LOGIN_MESSAGE"


def test_an_expired_challenge_is_refused(db, settings):
    from dex.redis import redis_client

    key = EthAccount.create()
    message = _challenge(key)
    nonce = message.split("Nonce: ")[1].split("\n")[0]
    redis_client().delete(f"dex:login:{nonce}")  # what its TTL does
    response = _login(message, sign_message(key.key, message))
    assert response.status_code == 401
    assert response.json()["code"] == "LOGIN_CHALLENGE_EXPIRED"


def test_a_challenge_is_forgotten_at_its_stated_expiration_time(db, monkeypatch):
    import time
    from datetime import datetime

    from dex.redis import redis_client
    from exchange.services import sessions

    # Issued late in a second: the message's times are whole seconds, so the expiry it
    # states comes most of a second before a TTL counted from the clock would end.
    real_now = timezone.now
    monkeypatch.setattr(sessions.timezone, "now", lambda: real_now() - timedelta(seconds=0.9))
    key = EthAccount.create()
    message = _challenge(key)
    nonce = message.split("Nonce: ")[1].split("\n")[0]
    stated = message.split("Expiration Time: ")[1].split("\n")[0]
    expires_at = datetime.fromisoformat(stated.replace("Z", "+00:00"))

    remaining_ms = redis_client().pttl(f"dex:login:{nonce}")
    until_stated_ms = (expires_at.timestamp() - time.time()) * 1000
    assert abs(remaining_ms - until_stated_ms) < 150, (remaining_ms, until_stated_ms)


@pytest.mark.parametrize(
    "body",
    [
        {"message": "hello", "signature": "0x" + "00" * 65},
        {"message": "Nonce: " + "a" * 32, "signature": "0x12"},
        {"message": 5},
        {},
    ],
)
def test_bad_logins_are_4xx(db, body):
    response = APIClient().post("/api/v1/auth/login/", body, format="json")
    assert 400 <= response.status_code < 500
    assert response.json()["code"]


@pytest.mark.parametrize("address", ["0x123", "not an address", "", 12])
def test_a_challenge_needs_an_address(db, address):
    response = APIClient().post("/api/v1/auth/challenge/", {"address": address}, format="json")
    assert response.status_code == 400
    assert "address" in response.json()["details"]


def test_logout_ends_the_session(db):
    session = sign_in(APIClient(), EthAccount.create())
    client = bearer(session["token"])
    assert client.post("/api/v1/auth/logout/").status_code == 204
    response = client.get("/api/v1/account/")
    assert response.status_code == 401
    assert response.json()["code"] == "AUTHENTICATION_FAILED"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_AUTHORIZATION": "Bearer nope"},
        {"HTTP_AUTHORIZATION": "Bearer"},
        {"HTTP_X_API_KEY": "nope"},
        {"HTTP_X_API_KEY": "abc.def"},
    ],
)
def test_without_a_valid_credential_trader_endpoints_are_401(db, headers):
    response = APIClient().get("/api/v1/orders/", **headers)
    assert response.status_code == 401
    assert response.json()["code"] in {"NOT_AUTHENTICATED", "AUTHENTICATION_FAILED"}


def test_api_keys_are_created_listed_and_revoked_from_a_wallet_session(db):
    key = EthAccount.create()
    wallet = bearer(sign_in(APIClient(), key)["token"])
    created = wallet.post(
        "/api/v1/api-keys/", {"name": "bot", "scopes": ["read", "trade"]}, format="json"
    )
    assert created.status_code == 201, created.json()
    secret = created.json()["secret"]
    assert sorted(created.json()["scopes"]) == ["read", "trade"]
    stored = ApiKey.objects.get(prefix=created.json()["prefix"])
    assert secret.split(".")[1] not in stored.key_hash  # only a hash is kept
    listed = wallet.get("/api/v1/api-keys/").json()
    assert [k["prefix"] for k in listed] == [stored.prefix]
    assert "secret" not in listed[0]

    bot = APIClient()
    bot.credentials(HTTP_X_API_KEY=secret)
    assert bot.get("/api/v1/account/").status_code == 200

    revoked = wallet.delete(f"/api/v1/api-keys/{stored.prefix}/")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"]
    response = bot.get("/api/v1/account/")
    assert response.status_code == 401
    assert "revoked" in response.json()["message"]


def test_an_api_key_cannot_manage_keys(db):
    wallet = Wallet.create()
    client = key_client(wallet.account)
    assert client.get("/api/v1/api-keys/").status_code == 403
    response = client.post("/api/v1/api-keys/", {"name": "x", "scopes": ["read"]}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "PERMISSION_DENIED"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["admin"]},
        {"name": "", "scopes": ["read"]},
        {"name": "x", "scopes": "read"},
        {"name": "x", "scopes": ["read"], "expires_at": -1},
        {"name": "x", "scopes": ["read"], "expires_at": 2**40},
    ],
)
def test_bad_api_key_requests_are_400(db, body):
    wallet = bearer(sign_in(APIClient(), EthAccount.create())["token"])
    response = wallet.post("/api/v1/api-keys/", body, format="json")
    assert response.status_code == 400, response.json()
    assert not ApiKey.objects.exists()


def test_an_expired_api_key_is_refused(db):
    wallet = Wallet.create()
    issued = api_key_create(
        account=wallet.account,
        name="short",
        scopes=["read"],
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.secret)
    assert client.get("/api/v1/account/").status_code == 200
    later = timezone.now() + timedelta(minutes=6)
    with mock.patch("dex.api.authentication.timezone.now", return_value=later):
        response = client.get("/api/v1/account/")
    assert response.status_code == 401
    assert "expired" in response.json()["message"]


def test_scopes_decide_what_a_key_may_do(market, quote, base):
    from tests.portfolio import sim

    wallet = Wallet.create(kyc_tier=1)
    sim.deposit(wallet.account, quote, "1000")
    reader = key_client(wallet.account, scopes=["read"])
    assert reader.get("/api/v1/orders/").status_code == 200
    assert reader.get("/api/v1/balances/").status_code == 200
    placed = reader.post("/api/v1/orders/", wallet.order(market), format="json")
    assert placed.status_code == 403
    assert "trade" in placed.json()["message"]
    withdraw = reader.post(
        "/api/v1/withdrawals/",
        {
            "asset": "USDC",
            "amount": "1",
            "destination_address": "0x" + "12" * 20,
            "client_request_id": "w1",
        },
        format="json",
    )
    assert withdraw.status_code == 403
    trader = key_client(wallet.account, scopes=["trade"])
    assert trader.post("/api/v1/orders/", wallet.order(market), format="json").status_code == 201


def test_a_closed_account_cannot_authenticate(db):
    wallet = Wallet.create()
    client = key_client(wallet.account)
    Account.objects.filter(pk=wallet.account.pk).update(status=AccountStatus.CLOSED)
    assert client.get("/api/v1/account/").status_code == 401


def test_the_eip712_types_and_domain_are_published(db, settings):
    body = APIClient().get("/api/v1/eip712/").json()
    assert body["types"] == ORDER_TYPES
    assert body["primaryType"] == "Order"
    assert body["domain"] == {
        "name": settings.EIP712_DOMAIN_NAME,
        "version": settings.EIP712_DOMAIN_VERSION,
        "chainId": settings.EIP712_CHAIN_ID,
        "verifyingContract": settings.EIP712_VERIFYING_CONTRACT,
    }
    assert body["amount_decimals"] == 8


def test_errors_django_raises_before_the_api_are_json_too(db):
    response = APIClient().get("/api/v1/markets/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response.json()["code"] == "BAD_REQUEST"
    missing = APIClient().get("/api/v1/no-such-endpoint/")
    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"
