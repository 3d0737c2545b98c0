"""EIP-712 order signatures and sign-in signatures under mutation: any signature that is
not the exact signer's, in its one canonical form, over the exact fields is refused
with a ``SignatureError`` (``INVALID_SIGNATURE``) or recovers another address
(``SIGNATURE_MISMATCH``) — never accepted, never another exception."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from eth_account import Account as EthAccount
from hypothesis import given
from hypothesis import strategies as st

from exchange.signing import (
    SECP256K1_N,
    OrderFields,
    SignatureError,
    eip712_domain,
    order_digest,
    order_message,
    recover_message_signer,
    recover_signer,
    sign_message,
    sign_order,
)
from tests.hostile.conftest import FUZZ, assert_error_shape, ledger_state

KEY = EthAccount.from_key("0x" + "4c" * 32)
SIGNER = KEY.address.lower()
FIELDS = OrderFields(
    account=SIGNER,
    market="ETH-USDC",
    client_order_id="c-1",
    side="BUY",
    order_type="LIMIT",
    time_in_force="GTC",
    nonce=7,
    price=Decimal("100"),
    quantity=Decimal("2"),
)
ORDER_HASH, SIGNATURE = sign_order(KEY.key, FIELDS)
DIGEST = bytes.fromhex(ORDER_HASH[2:])
RAW = bytes.fromhex(SIGNATURE[2:])


def outcome(digest: bytes, signature) -> str | None:
    """The recovered address, or None for a refusal; anything else raised fails."""
    try:
        return recover_signer(digest, signature)
    except SignatureError as exc:
        reason = str(exc)
    assert reason
    return None


def high_s(raw: bytes) -> bytes:
    s = int.from_bytes(raw[32:64])
    return raw[:32] + (SECP256K1_N - s).to_bytes(32) + bytes([55 - raw[64]])  # 27 <-> 28


def with_v(raw: bytes, v: int) -> bytes:
    return raw[:64] + bytes([v])


def hex_(raw: bytes) -> str:
    return "0x" + raw.hex()


def test_the_signers_own_signature_recovers_the_signer():
    assert outcome(DIGEST, SIGNATURE) == SIGNER
    assert outcome(DIGEST, SIGNATURE[2:]) == SIGNER  # without the 0x
    assert outcome(DIGEST, hex_(with_v(RAW, RAW[64] - 27))) == SIGNER  # v as 0/1


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(hex_(high_s(RAW)), id="high-s twin"),
        pytest.param(hex_(with_v(high_s(RAW), high_s(RAW)[64] - 27)), id="high-s twin, v 0/1"),
        *(pytest.param(hex_(with_v(RAW, v)), id=f"v={v}") for v in (2, 26, 29, 35, 36, 37, 255)),
        pytest.param(SIGNATURE[:-2], id="truncated by a byte"),
        pytest.param(SIGNATURE[:-1], id="odd length"),
        pytest.param(SIGNATURE + "00", id="a byte too many"),
        pytest.param("0x" + "zz" * 65, id="not hex"),
        pytest.param("0x" + "00 " * 42 + "0000", id="hex with spaces"),
        pytest.param("0x" + "00" * 65, id="zeros"),
        pytest.param(hex_(b"\xff" * 65), id="r and s past the group order"),
        pytest.param("", id="empty"),
        pytest.param("0x", id="only the prefix"),
        pytest.param(None, id="None"),
        pytest.param(12345, id="a number"),
        pytest.param(SIGNATURE.replace("0x", "0X"), id="0X prefix"),
        pytest.param(" " + SIGNATURE, id="leading space"),
        pytest.param("0x" + "٠" * 130, id="Arabic-Indic zeros"),
    ],
)
def test_every_other_form_of_a_signature_is_refused_by_name(signature):
    assert outcome(DIGEST, signature) is None


@given(raw=st.binary(min_size=0, max_size=100))
@FUZZ
def test_random_bytes_are_never_the_signers_signature(raw):
    assert outcome(DIGEST, hex_(raw)) != SIGNER


@given(text=st.text(max_size=140))
@FUZZ
def test_random_text_is_never_the_signers_signature(text):
    assert outcome(DIGEST, text) != SIGNER


@given(
    position=st.integers(min_value=0, max_value=64), flip=st.integers(min_value=1, max_value=255)
)
@FUZZ
def test_a_changed_byte_of_the_signature_is_never_the_signer(position, flip):
    mutated = bytearray(RAW)
    mutated[position] ^= flip
    assert outcome(DIGEST, hex_(bytes(mutated))) != SIGNER


AFTER_EPOCH = datetime(1970, 1, 2)  # noqa: DTZ001 (hypothesis takes naive bounds)
amounts = st.none() | st.decimals(min_value=0, max_value=10**9, places=8)
changes = st.fixed_dictionaries(
    {},
    optional={
        "account": st.from_regex(r"0x[0-9a-f]{40}", fullmatch=True),
        "market": st.sampled_from(["ETH-USDC", "BTC-USDC", "eth-usdc", "ETH-USDC "]),
        "client_order_id": st.text(max_size=10),
        "side": st.sampled_from(["BUY", "SELL"]),
        "order_type": st.sampled_from(["LIMIT", "MARKET", "STOP_LIMIT"]),
        "time_in_force": st.sampled_from(["GTC", "IOC", "FOK", "GTT"]),
        "nonce": st.integers(min_value=0, max_value=2**256 - 1),
        "price": amounts,
        "stop_price": amounts,
        "quantity": amounts,
        "quote_quantity": amounts,
        "protection_price": amounts,
        "display_quantity": amounts,
        "post_only": st.booleans(),
        "self_trade_prevention": st.sampled_from(["EXPIRE_TAKER", "EXPIRE_MAKER", "DECREMENT"]),
        "expires_at": st.none() | st.datetimes(min_value=AFTER_EPOCH, timezones=st.just(UTC)),
    },
)
domain_changes = st.fixed_dictionaries(
    {},
    optional={
        "chainId": st.integers(min_value=0, max_value=2**64),
        "name": st.text(max_size=8),
        "version": st.sampled_from(["1", "2"]),
        "verifyingContract": st.from_regex(r"0x[0-9a-f]{40}", fullmatch=True),
    },
)


@given(change=changes, domain_change=domain_changes)
@FUZZ
def test_the_signature_holds_for_exactly_the_fields_and_domain_signed(change, domain_change):
    fields = replace(FIELDS, **change)
    domain = eip712_domain() | domain_change
    same = order_message(fields) == order_message(FIELDS) and domain == eip712_domain()
    assert (outcome(order_digest(fields, domain), SIGNATURE) == SIGNER) == same


def test_sign_in_signatures_take_the_same_canonical_form():
    message = "example.com wants you to sign in"
    signature = sign_message(KEY.key, message)
    raw = bytes.fromhex(signature[2:])
    assert recover_message_signer(message, signature) == SIGNER
    assert recover_message_signer(message + " ", signature) != SIGNER
    for forged in (hex_(high_s(raw)), hex_(with_v(raw, 35)), signature[:-2], "0x" + "zz" * 65):
        with pytest.raises(SignatureError):
            recover_message_signer(message, forged)


@pytest.mark.django_db
@given(
    forged=st.sampled_from(["high-s", "v=35", "v=0/1", "other field", "other key"]),
    field=st.sampled_from(["price", "quantity", "side", "nonce", "client_order_id", "post_only"]),
)
@FUZZ
def test_the_api_takes_only_the_exact_signers_signature_over_the_exact_fields(
    funded, market, forged, field
):
    body = funded.wallet.order(market)
    raw = bytes.fromhex(body["signature"][2:])
    tampered = {"price": "100.01", "quantity": "3", "side": "SELL", "nonce": "999999"}
    tampered |= {"client_order_id": "other", "post_only": True}
    if forged == "high-s":
        body["signature"] = hex_(high_s(raw))
    elif forged == "v=35":
        body["signature"] = hex_(with_v(raw, raw[64] - 27 + 35))
    elif forged == "v=0/1":  # the same signature, another accepted spelling of v
        body["signature"] = hex_(with_v(raw, raw[64] - 27))
    elif forged == "other field":
        body[field] = tampered[field]
    else:
        body["signature"] = EthAccount.create().unsafe_sign_hash(b"\x01" * 32).signature.to_0x_hex()
    before = ledger_state()
    response = funded.api.post("/api/v1/orders/", body, format="json")
    if forged == "v=0/1":
        assert response.status_code == 201, response.json()
        return
    error = assert_error_shape(response)
    assert response.status_code == 401
    expected = (
        "SIGNATURE_MISMATCH" if forged in ("other field", "other key") else "INVALID_SIGNATURE"
    )
    assert error["code"] == expected, error
    assert ledger_state() == before
