"""A trader never sees another trader's orders or fills: someone else's order does
not exist for them (404, not 403, and nothing of it in the body)."""

import pytest

from exchange.matcher.market import MarketMatcher
from exchange.models import CommandKind, OrderCommand

ORDERS = "/api/v1/orders/"


@pytest.fixture
def bobs_order(bob_api, bob, market):
    order = bob_api.post(ORDERS, bob.order(market, client_order_id="bobs"), format="json").json()
    MarketMatcher(market).run_batch()
    return order


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "{id}/", None),
        ("delete", "{id}/", None),
        ("post", "{id}/amend/", {"price": "99", "nonce": "1", "signature": "0x" + "1b" * 65}),
        ("get", "by-client-id/bobs/", None),
        ("delete", "by-client-id/bobs/", None),
    ],
)
def test_another_traders_order_is_404(api, bobs_order, method, path, body):
    url = ORDERS + path.format(id=bobs_order["id"])
    response = getattr(api, method)(url, body, format="json")
    assert response.status_code == 404
    assert response.json() == {"code": "UNKNOWN_ORDER", "message": "no such order"}
    assert not OrderCommand.objects.exclude(kind=CommandKind.PLACE).exists()


def test_lists_hold_only_the_callers_orders_and_fills(api, bob_api, alice, bob, market, bobs_order):
    api.post(ORDERS, alice.order(market, side="SELL", price="100", quantity="1"), format="json")
    MarketMatcher(market).run_batch()  # Alice's sell fills Bob's buy at 100
    alice_orders = api.get(ORDERS).json()["results"]
    assert {o["client_order_id"] for o in alice_orders} == {alice_orders[0]["client_order_id"]}
    assert bobs_order["id"] not in {o["id"] for o in alice_orders}
    assert bobs_order["id"] not in {o["id"] for o in api.get(f"{ORDERS}open/").json()["results"]}
    [fill] = api.get("/api/v1/fills/").json()["results"]
    assert fill["order_id"] != bobs_order["id"]
    assert api.get("/api/v1/fills/", {"order_id": bobs_order["id"]}).json()["results"] == [fill]
    # ...the trade is Alice's too; what she sees of it is her side only.
    assert fill["side"] == "SELL"
    assert bob.account.wallet_address not in str(api.get("/api/v1/fills/").json())
