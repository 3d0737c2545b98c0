"""What traders sign: EIP-712 typed orders, and the sign-in message of their wallet.

An order's typed struct names every field that decides what the order may do, so a
signature binds all of them: change one and the recovered signer is another address.
Prices and sizes are unsigned integers in units of 10⁻⁸ (the platform's precision):
``1.5`` is ``150000000``, and ``0`` means "not given". ``expiresAt`` is Unix seconds
(``0`` for orders without an expiry). The domain (name, version, chain id, verifying
contract) comes from settings and is published at ``/api/v1/eip712/``.

An amend is signed too, as an ``Amend`` struct in the same domain: the hash of the order
it changes, its new price and quantity (``0``: unchanged) and a nonce of its own (each
used once per account), so a credential that may trade still cannot move a signed order
to terms its wallet did not sign, nor replay a change it once did.

The sign-in message follows EIP-4361 ("Sign-In with Ethereum") and is signed with
``personal_sign`` (EIP-191).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from django.conf import settings
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils import keccak

AMOUNT_DECIMALS = 8
AMOUNT_SCALE = 10**AMOUNT_DECIMALS
UINT256_MAX = 2**256 - 1

ORDER_PRIMARY_TYPE = "Order"
ORDER_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Order": [
        {"name": "account", "type": "address"},
        {"name": "market", "type": "string"},
        {"name": "clientOrderId", "type": "string"},
        {"name": "side", "type": "string"},
        {"name": "orderType", "type": "string"},
        {"name": "timeInForce", "type": "string"},
        {"name": "price", "type": "uint256"},
        {"name": "stopPrice", "type": "uint256"},
        {"name": "quantity", "type": "uint256"},
        {"name": "quoteQuantity", "type": "uint256"},
        {"name": "protectionPrice", "type": "uint256"},
        {"name": "displayQuantity", "type": "uint256"},
        {"name": "postOnly", "type": "bool"},
        {"name": "selfTradePrevention", "type": "string"},
        {"name": "expiresAt", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
    ],
}


AMEND_PRIMARY_TYPE = "Amend"
AMEND_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": ORDER_TYPES["EIP712Domain"],
    "Amend": [
        {"name": "account", "type": "address"},
        {"name": "orderHash", "type": "bytes32"},
        {"name": "price", "type": "uint256"},
        {"name": "quantity", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
    ],
}


class SignatureError(ValueError):
    """A signature that cannot be a secp256k1 signature at all."""


@dataclass(frozen=True, slots=True)
class OrderFields:
    """The signed fields of an order, as the trader meant them."""

    account: str
    market: str
    client_order_id: str
    side: str
    order_type: str
    time_in_force: str
    nonce: int
    price: Decimal | None = None
    stop_price: Decimal | None = None
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    protection_price: Decimal | None = None
    display_quantity: Decimal | None = None
    post_only: bool = False
    self_trade_prevention: str = "EXPIRE_TAKER"
    expires_at: datetime | None = None


def eip712_domain() -> dict:
    return {
        "name": settings.EIP712_DOMAIN_NAME,
        "version": settings.EIP712_DOMAIN_VERSION,
        "chainId": settings.EIP712_CHAIN_ID,
        "verifyingContract": settings.EIP712_VERIFYING_CONTRACT,
    }


def uint256(value: int, name: str) -> int:
    """``value`` if a ``uint256`` holds it; ``ValueError`` otherwise (no wallet could
    have signed it, and the encoder would fail on it with its own exception types)."""
    if not 0 <= value <= UINT256_MAX:
        raise ValueError(f"{name} {value} is outside 0 to 2**256 - 1")
    return value


def to_units(value: Decimal | None) -> int:
    """``value`` in 10⁻⁸ units; ``None`` is 0. Raises ``ValueError`` when ``value`` has
    finer precision than that, is negative, or does not fit a ``uint256``."""
    if value is None:
        return 0
    try:
        scaled = value.scaleb(AMOUNT_DECIMALS)
        units = int(scaled)
    except (InvalidOperation, OverflowError, ValueError) as exc:
        raise ValueError(f"{value} is not a finite amount") from exc
    if units != scaled or units < 0:
        raise ValueError(f"{value} is not a non-negative multiple of 10^-{AMOUNT_DECIMALS}")
    return uint256(units, "amount")


def order_message(fields: OrderFields) -> dict:
    return {
        "account": fields.account,
        "market": fields.market,
        "clientOrderId": fields.client_order_id,
        "side": fields.side,
        "orderType": fields.order_type,
        "timeInForce": fields.time_in_force,
        "price": to_units(fields.price),
        "stopPrice": to_units(fields.stop_price),
        "quantity": to_units(fields.quantity),
        "quoteQuantity": to_units(fields.quote_quantity),
        "protectionPrice": to_units(fields.protection_price),
        "displayQuantity": to_units(fields.display_quantity),
        "postOnly": bool(fields.post_only),
        "selfTradePrevention": fields.self_trade_prevention,
        "expiresAt": uint256(int(fields.expires_at.timestamp()), "expiry")
        if fields.expires_at
        else 0,
        "nonce": uint256(int(fields.nonce), "nonce"),
    }


def _typed_data(types: dict, primary: str, message: dict, domain: dict | None) -> dict:
    """The whole EIP-712 document, as a wallet's ``eth_signTypedData_v4`` takes it."""
    return {
        "types": types,
        "primaryType": primary,
        "domain": domain or eip712_domain(),
        "message": message,
    }


def _digest(typed_data: dict) -> bytes:
    """The 32-byte EIP-712 digest a wallet signs for ``typed_data``."""
    signable = encode_typed_data(full_message=typed_data)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def order_typed_data(fields: OrderFields, domain: dict | None = None) -> dict:
    return _typed_data(ORDER_TYPES, ORDER_PRIMARY_TYPE, order_message(fields), domain)


def order_digest(fields: OrderFields, domain: dict | None = None) -> bytes:
    """The digest the trader's wallet signs for an order: the order's hash."""
    return _digest(order_typed_data(fields, domain))


@dataclass(frozen=True, slots=True)
class AmendFields:
    """The signed fields of an amend: which order (its hash), to what, and its nonce."""

    account: str
    order_hash: str
    nonce: int
    price: Decimal | None = None
    quantity: Decimal | None = None


def amend_message(fields: AmendFields) -> dict:
    return {
        "account": fields.account,
        "orderHash": fields.order_hash,
        "price": to_units(fields.price),
        "quantity": to_units(fields.quantity),
        "nonce": uint256(int(fields.nonce), "nonce"),
    }


def amend_typed_data(fields: AmendFields, domain: dict | None = None) -> dict:
    return _typed_data(AMEND_TYPES, AMEND_PRIMARY_TYPE, amend_message(fields), domain)


def amend_digest(fields: AmendFields, domain: dict | None = None) -> bytes:
    """The digest the trader's wallet signs for an amend."""
    return _digest(amend_typed_data(fields, domain))


# The order of secp256k1's group. A signature's ``s`` above half of it is the other
# encoding of the same signature (ECDSA is malleable); as Ethereum does since EIP-2,
# only the low one is taken, so an order has one signature, not two.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SIGNATURE_V = {0: 0, 1: 1, 27: 0, 28: 1}
HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")


def signature_bytes(signature: str) -> bytes:
    """The 65 bytes ``r ‖ s ‖ v`` of a 0x-hex signature in its one accepted form: ``r``
    and ``s`` in range, ``s`` low, ``v`` 27/28 (or 0/1, as some wallets write it).
    ``SignatureError`` names what is wrong otherwise."""
    if not isinstance(signature, str):
        raise SignatureError("a signature is a 0x-hex string")
    digits = signature.removeprefix("0x")
    if len(digits) != 130:
        raise SignatureError("a signature is 65 bytes (130 hex digits)")
    if not HEX_DIGITS.fullmatch(digits):  # bytes.fromhex would skip spaces
        raise SignatureError("a signature is hexadecimal")
    raw = bytes.fromhex(digits)
    r, s, v = int.from_bytes(raw[:32]), int.from_bytes(raw[32:64]), raw[64]
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise SignatureError("r and s of the signature are out of range")
    if s > SECP256K1_N // 2:
        raise SignatureError("the signature's s is high (not in canonical low-s form)")
    if v not in SIGNATURE_V:
        raise SignatureError(f"the signature's v is {v}; it is 27 or 28 (or 0 or 1)")
    return raw[:64] + bytes([27 + SIGNATURE_V[v]])


def recover_signer(digest: bytes, signature: str) -> str:
    """The lowercase address whose key made ``signature`` over ``digest``."""
    raw = signature_bytes(signature)
    try:
        return EthAccount._recover_hash(digest, signature=raw).lower()
    except Exception as exc:  # eth-keys raises several types for a point not on the curve
        raise SignatureError(f"not a valid signature: {exc}") from None


def sign_order(private_key, fields: OrderFields, domain: dict | None = None) -> tuple[str, str]:
    """Sign as a client does: returns ``(order_hash, signature)`` as 0x-hex strings."""
    digest = order_digest(fields, domain)
    signed = EthAccount._sign_hash(digest, private_key)
    return "0x" + digest.hex(), "0x" + bytes(signed.signature).hex()


# --- sign-in (EIP-4361) ---------------------------------------------------------------


def login_message(*, address: str, nonce: str, issued_at: datetime, expires_at: datetime) -> str:
    """The text a wallet signs to sign in. Its ``Nonce`` is single-use."""
    return (
        f"{settings.SIWE_DOMAIN} wants you to sign in with your Ethereum account:\n"
        f"{address}\n\n"
        f"Sign in to trade on {settings.EIP712_DOMAIN_NAME}.\n\n"
        f"URI: {settings.SIWE_URI}\n"
        f"Version: 1\n"
        f"Chain ID: {settings.EIP712_CHAIN_ID}\n"
        f"Nonce: {nonce}\n"
        f"Issued At: {_iso(issued_at)}\n"
        f"Expiration Time: {_iso(expires_at)}"
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def recover_message_signer(message: str, signature: str) -> str:
    """The lowercase address that ``personal_sign``-ed ``message``."""
    raw = signature_bytes(signature)
    try:
        return EthAccount.recover_message(encode_defunct(text=message), signature=raw).lower()
    except Exception as exc:
        raise SignatureError(f"not a valid signature: {exc}") from None


def sign_message(private_key, message: str) -> str:
    signed = EthAccount.sign_message(encode_defunct(text=message), private_key)
    return "0x" + bytes(signed.signature).hex()


def sign_amend(private_key, fields: AmendFields, domain: dict | None = None) -> str:
    """Sign an amend as a client does: returns the 0x-hex signature."""
    signed = EthAccount._sign_hash(amend_digest(fields, domain), private_key)
    return "0x" + bytes(signed.signature).hex()
