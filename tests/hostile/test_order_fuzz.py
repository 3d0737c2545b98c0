"""``POST /api/v1/orders/`` and ``/orders/batch/`` under arbitrary bodies: wrong types,
huge and non-finite numbers, exponent notation, negative zero, non-ASCII digits, long
strings, nested objects. Each mutated order is signed again where its fields can be
signed at all, so the fuzzer reaches past the signature into the order rules. Every
answer is a 4xx in the error shape (or 200/201 for an order that is genuinely valid),
never a 5xx, and a refusal writes nothing: no order, no command, no hold."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from datetime import UTC
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dex.api.parsers import JSON_MAX_DEPTH
from exchange.models import OrderType, SelfTradePrevention, TimeInForce
from exchange.services.orders import (
    OrderRejected,
    OrderRequest,
    order_fields,
    order_place_signed,
)
from exchange.signing import sign_order
from tests.hostile.conftest import FUZZ, assert_error_shape, ledger_state

pytestmark = pytest.mark.django_db

NUMERIC_TRICKS = [
    "NaN",
    "nan",
    "-NaN",
    "sNaN",
    "Infinity",
    "-Infinity",
    "inf",
    "1e400",
    "1E+400",
    "1e-400",
    "-1e400",
    "-0",
    "-0.0",
    "0",
    "0E-30",
    "1e2",
    "100.000000001",
    "1_000",
    " 100 ",
    "+100",
    "0x64",
    "١٠٠",  # Arabic-Indic digits
    "１００",  # full-width digits
    "𝟏𝟎𝟎",  # mathematical bold digits
    "9" * 100,
    "1" + "0" * 5000,
    "0." + "0" * 5000 + "1",
    "",
    "\x00",
    "100\x00",
]
SIGNED_FIELDS = [
    "market",
    "client_order_id",
    "side",
    "type",
    "time_in_force",
    "price",
    "stop_price",
    "protection_price",
    "quantity",
    "quote_quantity",
    "display_quantity",
    "post_only",
    "self_trade_prevention",
    "expires_at",
    "nonce",
]
ALL_FIELDS = [*SIGNED_FIELDS, "signature", "order_hash", "account", "status", "id"]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NUMERIC_TRICKS),
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=60, max_size=200),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

# Values a client might plausibly send for each field, wrong or right: they carry the
# fuzzer past the parser into the order rules, the compliance gates and the ledger.
amounts = st.one_of(
    st.decimals(min_value=-1, max_value=10**7, places=3, allow_nan=False).map(str),
    st.decimals(min_value=0, max_value=10**12, places=8, allow_nan=False).map(str),
    st.sampled_from(["0.01", "0.001", "1", "2", "99.99", "100", "101", "1000000"]),
)
plausible = {
    "price": amounts,
    "stop_price": amounts,
    "protection_price": amounts,
    "quantity": amounts,
    "quote_quantity": amounts,
    "display_quantity": amounts,
    "side": st.sampled_from(["BUY", "SELL", "buy"]),
    "type": st.sampled_from([*OrderType.values, "ICEBERG"]),
    "time_in_force": st.sampled_from([*TimeInForce.values, "DAY"]),
    "post_only": st.booleans(),
    "self_trade_prevention": st.sampled_from([*SelfTradePrevention.values, "NONE"]),
    "expires_at": st.integers(min_value=0, max_value=2**64),
    "nonce": st.integers(min_value=-1, max_value=2**257) | st.integers().map(str),
    "client_order_id": st.from_regex(r"[A-Za-z0-9_.:-]{1,70}", fullmatch=True),
}


@st.composite
def mutations(draw) -> dict:
    names = draw(st.lists(st.sampled_from(ALL_FIELDS), min_size=1, max_size=4, unique=True))
    return {
        name: draw(plausible[name] | json_values if name in plausible else json_values)
        for name in names
    }


def signed(wallet, market, mutation: dict, drop: list[str], resign: bool) -> dict:
    body = wallet.order(market) | mutation
    for name in drop:
        body.pop(name, None)
    if resign and "signature" not in mutation:
        # Fields no client could sign keep the earlier signature.
        with contextlib.suppress(Exception):
            body["signature"] = wallet.sign(body)
    return body


def post_raw(api, path: str, payload) -> object:
    """Posts ``payload`` as JSON the way any client may: NaN and Infinity literals
    included, which Python's encoder writes and strict JSON has not."""
    return api.generic("POST", path, json.dumps(payload), content_type="application/json")


def assert_answer(response, before) -> None:
    assert response.status_code < 500, response.content[:500]
    if response.status_code in (200, 201):
        return
    assert_error_shape(response)
    assert ledger_state() == before


@given(
    mutation=mutations(),
    drop=st.lists(st.sampled_from(SIGNED_FIELDS), max_size=2),
    resign=st.booleans(),
)
@FUZZ
def test_any_order_body_is_accepted_or_refused_cleanly(funded, market, mutation, drop, resign):
    body = signed(funded.wallet, market, mutation, drop, resign)
    before = ledger_state()
    assert_answer(post_raw(funded.api, "/api/v1/orders/", body), before)


@given(payload=json_values)
@FUZZ
def test_a_body_that_is_not_an_order_object_is_refused(funded, payload):
    before = ledger_state()
    response = post_raw(funded.api, "/api/v1/orders/", payload)
    assert_error_shape(response)
    assert ledger_state() == before


@given(
    mutations=st.lists(mutations(), min_size=1, max_size=3),
    wrap=st.sampled_from(["list", "object", "bare"]),
)
@FUZZ
def test_any_batch_is_answered_per_order_without_a_5xx(funded, market, mutations, wrap):
    orders = [signed(funded.wallet, market, m, [], resign=True) for m in mutations]
    payload = (
        {"orders": orders}
        if wrap == "list"
        else {"orders": orders[0]}
        if wrap == "object"
        else orders
    )
    before = ledger_state()
    response = post_raw(funded.api, "/api/v1/orders/batch/", payload)
    assert response.status_code < 500, response.content[:500]
    if response.status_code != 200:
        assert_error_shape(response)
        assert ledger_state() == before
        return
    results = response.json()["results"]
    assert len(results) == len(orders)
    for result in results:
        assert result["ok"] or (result["code"] and result["message"])


@pytest.mark.parametrize("price", ["١٠٠", "１００", "1_00", "1e2", "100.000000001", "-0", "NaN"])
def test_amounts_are_plain_ascii_decimals(funded, market, price):
    """A price the client meant as 100 but wrote in another script or with separators
    is refused by name, not read as a number the client may not have signed."""
    body = funded.wallet.order(market)
    body["price"] = price
    with contextlib.suppress(Exception):  # a price finer than 1e-8 cannot be signed
        body["signature"] = funded.wallet.sign(body)
    before = ledger_state()
    response = post_raw(funded.api, "/api/v1/orders/", body)
    if price == "1e2":
        assert response.status_code == 201, response.json()
        return
    error = assert_error_shape(response)
    assert "price" in error.get("details", {}) or error["code"] == "INVALID_AMOUNT", error
    assert ledger_state() == before


def test_a_valid_order_still_goes_through(funded, market):
    before = ledger_state()
    response = post_raw(funded.api, "/api/v1/orders/", funded.wallet.order(market))
    assert response.status_code == 201, response.json()
    assert ledger_state() != before


decimals = st.one_of(
    st.none(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(["-0", "0E-30", "1e400", "1E+77", "1e-400", "99999999999999999999.99"]).map(
        Decimal
    ),
    st.decimals(min_value=0, max_value=10**6, places=2),
)


@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "price": decimals,
            "stop_price": decimals,
            "protection_price": decimals,
            "quantity": decimals,
            "quote_quantity": decimals,
            "display_quantity": decimals,
            "side": st.text(max_size=5) | st.sampled_from(["BUY", "SELL"]),
            "type": st.text(max_size=5) | st.sampled_from(OrderType.values),
            "time_in_force": st.none() | st.sampled_from([*TimeInForce.values, "X"]),
            "self_trade_prevention": st.sampled_from([*SelfTradePrevention.values, "X"]),
            "post_only": st.booleans(),
            "nonce": st.integers(min_value=-(2**260), max_value=2**260),
            "expires_at": st.none() | st.datetimes(timezones=st.just(UTC)),
            "client_order_id": st.text(max_size=80),
        },
    ),
    resign=st.booleans(),
)
@FUZZ
def test_the_placement_service_refuses_any_unsound_request_by_code(funded, market, fields, resign):
    """Past the parser: ``order_place_signed`` given any values of the right Python
    types either places the order or raises ``OrderRejected``, and writes nothing then."""
    request = OrderRequest(
        client_order_id="svc",
        side="BUY",
        type="LIMIT",
        nonce=10**9,
        price=Decimal("100"),
        quantity=Decimal("1"),
        signature="0x" + "00" * 65,
        order_hash="",
    )
    request = replace(request, **fields)
    if resign:
        with contextlib.suppress(Exception):  # what no wallet could sign keeps the zeros
            fields = order_fields(account=funded.account, market=market, request=request)
            request = replace(request, signature=sign_order(funded.wallet.key.key, fields)[1])
    before = ledger_state()
    try:
        order_place_signed(account=funded.account, market=market, request=request)
    except OrderRejected as exc:
        refusal = exc
    else:
        return
    assert refusal.code
    assert str(refusal)
    assert ledger_state() == before


@pytest.mark.parametrize(
    "path", ["/api/v1/orders/", "/api/v1/orders/batch/", "/api/v1/orders/cancel-all/"]
)
@pytest.mark.parametrize(
    "nesting",
    [
        pytest.param("[" * (JSON_MAX_DEPTH + 1) + "]" * (JSON_MAX_DEPTH + 1), id="just too deep"),
        pytest.param('{"a":' * 5000 + "1" + "}" * 5000, id="objects"),
        # Under the body limit, and deep enough to overflow the C stack in the decoder.
        pytest.param("[" * 150_000, id="150k unclosed"),
    ],
)
def test_json_nested_too_deep_is_malformed_never_decoded(funded, path, nesting):
    before = ledger_state()
    response = funded.api.generic("POST", path, nesting, content_type="application/json")
    error = assert_error_shape(response)
    assert error["code"] == "MALFORMED_REQUEST"
    assert ledger_state() == before


def test_brackets_inside_strings_and_nesting_up_to_the_limit_are_decoded(funded, market):
    body = funded.wallet.order(market)
    body["client_order_id"] = "[{" * 40
    body["extra"] = json.loads("[" * (JSON_MAX_DEPTH - 1) + "]" * (JSON_MAX_DEPTH - 1))
    response = post_raw(funded.api, "/api/v1/orders/", body)
    error = assert_error_shape(response)
    assert error["code"] == "VALIDATION_ERROR"
    assert list(error["details"]) == ["client_order_id"]
