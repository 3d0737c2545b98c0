"""Talking to the API as a trader's client does: a wallet that signs orders (EIP-712),
and an HTTP client holding a credential."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from eth_account import Account as EthAccount
from eth_account.signers.local import LocalAccount
from rest_framework.test import APIClient

from exchange.models import Account, ApiKeyScope, Market
from exchange.services.sessions import api_key_create
from exchange.signing import AmendFields, OrderFields, sign_amend, sign_order
from tests.factories import AccountFactory

_nonces = itertools.count(1)
_client_ids = itertools.count(1)


@dataclass
class Wallet:
    """A trader's key and account."""

    key: LocalAccount
    account: Account

    @classmethod
    def create(cls, **account_fields) -> Wallet:
        key = EthAccount.create()
        account = AccountFactory(wallet_address=key.address.lower(), **account_fields)
        return cls(key, account)

    def order(self, market: Market, **fields) -> dict:
        """A signed order body for ``POST /api/v1/orders/``: a GTC limit buy of 2 at 100
        unless told otherwise. ``None`` leaves a field out."""
        body = {
            "market": market.symbol,
            "client_order_id": f"c-{next(_client_ids)}",
            "side": "BUY",
            "type": "LIMIT",
            "price": "100",
            "quantity": "2",
            "nonce": str(next(_nonces)),
        } | fields
        body = {k: v for k, v in body.items() if v is not None}
        body["signature"] = self.sign(body)
        return body

    def sign(self, body: dict, **signed_instead) -> str:
        """The signature a client makes over ``body`` (with ``signed_instead`` fields
        replacing what the body says: the way to forge a mismatch)."""
        signed = body | signed_instead
        kind = signed["type"]
        tif = signed.get("time_in_force") or ("GTC" if "LIMIT" in kind else "IOC")

        def dec(name):
            value = signed.get(name)
            return Decimal(str(value)) if value is not None else None

        expires = signed.get("expires_at")
        fields = OrderFields(
            account=signed.get("account", self.account.wallet_address),
            market=signed["market"],
            client_order_id=signed["client_order_id"],
            side=signed["side"],
            order_type=kind,
            time_in_force=tif,
            nonce=int(signed["nonce"]),
            price=dec("price"),
            stop_price=dec("stop_price"),
            quantity=dec("quantity"),
            quote_quantity=dec("quote_quantity"),
            protection_price=dec("protection_price"),
            display_quantity=dec("display_quantity"),
            post_only=bool(signed.get("post_only", False)),
            self_trade_prevention=signed.get("self_trade_prevention", "EXPIRE_TAKER"),
            expires_at=datetime.fromtimestamp(int(expires)).astimezone() if expires else None,
        )
        return sign_order(self.key.key, fields)[1]


def signed_amend(wallet: Wallet, order: dict, **fields) -> dict:
    """A signed amend body for ``POST /api/v1/orders/<id>/amend/`` of ``order`` (as the
    API returned it): the given ``price``/``quantity``; ``signed_instead`` values (a
    dict) are signed in place of the body's, the way to forge a mismatch."""
    signed_instead = fields.pop("signed_instead", {})
    body = {"nonce": str(next(_nonces))} | {k: v for k, v in fields.items() if v is not None}
    signed = body | signed_instead

    def dec(name):
        value = signed.get(name)
        return Decimal(str(value)) if value is not None else None

    body["signature"] = sign_amend(
        wallet.key.key,
        AmendFields(
            account=signed.get("account", wallet.account.wallet_address),
            order_hash=signed.get("order_hash", order["order_hash"]),
            nonce=int(signed["nonce"]),
            price=dec("price"),
            quantity=dec("quantity"),
        ),
    )
    return body


def key_client(account: Account, scopes=tuple(ApiKeyScope.values)) -> APIClient:
    """An API client holding a fresh API key of ``account`` with ``scopes``."""
    issued = api_key_create(account=account, name="test", scopes=list(scopes))
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.secret)
    return client
