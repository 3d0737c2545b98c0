"""The dashboard page: public, one market at a time, a picker of all of them, its script
and styles served as static files, and a link to it in the admin's header for staff.
What the page does live is proven in a browser (test_dashboard_browser.py)."""

import json

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

from exchange.models import MarketStatus
from tests.factories import AssetFactory, MarketFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def markets(market):
    btc = AssetFactory(symbol="BTC")
    sol = AssetFactory(symbol="SOL")
    return [
        market,
        MarketFactory(base=btc, quote=market.quote, tick_size="0.5", lot_size="0.0001"),
        MarketFactory(base=sol, quote=market.quote, status=MarketStatus.HALTED),
    ]


def config(response) -> dict:
    text = response.content.decode()
    start = text.index('<script id="dashboard-config" type="application/json">')
    body = text[text.index(">", start) + 1 : text.index("</script>", start)]
    return json.loads(body)


def test_the_dashboard_shows_the_first_market_and_a_picker_of_every_market(client, markets):
    response = client.get("/dashboard/")

    assert response.status_code == 200
    for symbol in ("BTC-USDC", "ETH-USDC", "SOL-USDC"):
        url = reverse("dashboard-market", args=[symbol])
        assert f'value="{symbol}" data-url="{url}"' in response.content.decode()
    assert "SOL-USDC (halted)" in response.content.decode()
    assert config(response)["symbol"] == "BTC-USDC"  # markets are listed by symbol


def test_a_market_page_hands_its_script_the_market_and_its_number_formats(client, markets):
    response = client.get("/dashboard/BTC-USDC/")

    assert response.status_code == 200
    assert '<option value="BTC-USDC" data-url="/dashboard/BTC-USDC/" selected>' in (
        response.content.decode()
    )
    assert config(response) == {
        "symbol": "BTC-USDC",
        "base": "BTC",
        "quote": "USDC",
        "priceDecimals": 1,
        "quantityDecimals": 4,
        "streamPath": "/ws/stream/",
        "apiBase": "/api/v1/markets/BTC-USDC/",
    }
    assert 'src="/static/exchange/dashboard.js"' in response.content.decode()


@pytest.mark.parametrize("symbol", ["DOGE-USDC", "eth-usdc", "ETH-USDC%00"])
def test_an_unknown_market_is_a_404_page(client, markets, symbol):
    response = client.get(f"/dashboard/{symbol}/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_without_markets_the_page_says_so(client, db):
    response = client.get("/dashboard/")

    assert response.status_code == 200
    assert "No markets yet." in response.content.decode()
    assert "dashboard.js" not in response.content.decode()


def test_the_script_and_styles_are_served(client, db):
    for name in ("exchange/dashboard.js", "exchange/dashboard.css"):
        assert finders.find(name)
        response = client.get(f"/static/{name}")
        assert response.status_code == 200
        assert b"".join(response.streaming_content)


def test_the_admin_header_links_staff_to_the_dashboard(admin_client):
    response = admin_client.get(reverse("admin:index"))

    assert response.status_code == 200
    assert '<a href="/dashboard/">Live dashboard</a>' in response.content.decode()
    assert "View site" not in response.content.decode()  # "/" has no page
