"""Public market data over HTTP: markets and their rules, depth (the matcher's book or,
before it has published one, the open orders), recent trades, 24 h tickers and
candles, and a 4xx in the one error shape for every bad request.

Each test makes its own market with a fresh symbol, so the Redis book snapshots it
writes cannot meet another test's.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Max
from django.utils import timezone
from rest_framework.test import APIClient

from dex.redis import redis_client
from exchange.matcher.market import MarketMatcher
from exchange.matcher.publish import book_key, snapshot
from exchange.models import Market, MarketStatus, Side, Trade
from exchange.services.orders import order_cancel
from tests.factories import AccountFactory, AssetFactory, MarketFactory, OrderFactory, place_order
from tests.portfolio import sim

pytestmark = pytest.mark.django_db

D = Decimal


def s8(value) -> str:
    """A decimal as the API renders one stored with 8 places."""
    return format(D(value).quantize(D("0.00000001")), "f")


def fresh_symbol(prefix: str) -> str:
    return prefix + secrets.token_hex(3).upper()


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def make_market(db):
    """A new open market ``Xxxxxx-Yyyyyy`` with the factory's rules (tick 0.01, lot
    0.001); its Redis book is removed afterwards."""
    made: list[Market] = []

    def make(**fields) -> Market:
        base = AssetFactory(symbol=fresh_symbol("B"))
        quote = AssetFactory(symbol=fresh_symbol("Q"), decimals=6)
        market = MarketFactory(base=base, quote=quote, **fields)
        made.append(market)
        return market

    yield make
    if made:
        redis_client().delete(*(book_key(m.symbol) for m in made))


@pytest.fixture
def mkt(make_market) -> Market:
    return make_market()


def publish_book(market: Market, sequence: int, bids: list, asks: list) -> None:
    """Write the book snapshot the matcher would publish."""
    redis_client().set(
        book_key(market.symbol),
        json.dumps({"symbol": market.symbol, "sequence": sequence, "bids": bids, "asks": asks}),
    )


def trade_at(market: Market, price, quantity, at: datetime, *, taker_side=Side.BUY, sequence=None):
    """A trade executed at ``at``. The matcher stamps trades with its own clock, so
    tests that need trades at chosen moments (bucket edges, a 24 h window) write them
    as the matcher does, with their own time."""
    maker_side = Side.SELL if taker_side == Side.BUY else Side.BUY
    maker = OrderFactory(market=market, side=maker_side, price=D(price), quantity=D(quantity))
    taker = OrderFactory(market=market, side=taker_side, price=D(price), quantity=D(quantity))
    buyer, seller = (taker, maker) if taker_side == Side.BUY else (maker, taker)
    if sequence is None:
        sequence = (Trade.objects.filter(market=market).aggregate(m=Max("sequence"))["m"] or 0) + 1
    return Trade.objects.create(
        market=market,
        sequence=sequence,
        maker_order=maker,
        taker_order=taker,
        buyer_id=buyer.account_id,
        seller_id=seller.account_id,
        aggressor_side=taker_side,
        price=D(price),
        quantity=D(quantity),
        quote_quantity=D(price) * D(quantity),
        maker_fee=0,
        taker_fee=0,
        executed_at=at,
    )


def funded(market: Market):
    account = AccountFactory(kyc_tier=1)
    sim.deposit(account, market.quote, "100000")
    sim.deposit(account, market.base, "1000")
    return account


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    if field is not None:
        assert field in body["details"], body
    return body


# --------------------------------------------------------------------------------------
# Markets
# --------------------------------------------------------------------------------------


def test_markets_list_every_market_with_its_rules_without_credentials(client, make_market):
    first = make_market()
    second = make_market(status=MarketStatus.HALTED, maker_fee_rate=D("-0.0001"))

    response = client.get("/api/v1/markets/")

    assert response.status_code == 200
    by_symbol = {m["symbol"]: m for m in response.json()}
    assert by_symbol[first.symbol] == {
        "symbol": first.symbol,
        "base_asset": first.base.symbol,
        "quote_asset": first.quote.symbol,
        "status": "OPEN",
        "tick_size": "0.01000000",
        "lot_size": "0.00100000",
        "min_quantity": "0.00100000",
        "min_notional": "1.00000000",
        "maker_fee_rate": s8("0.0002"),
        "taker_fee_rate": s8("0.0005"),
        "price_band": s8("0.05"),
    }
    assert by_symbol[second.symbol]["status"] == "HALTED"
    assert D(by_symbol[second.symbol]["maker_fee_rate"]) == D("-0.0001")
    symbols = [m["symbol"] for m in response.json()]
    assert symbols == sorted(symbols)


def test_a_market_is_found_by_its_exact_symbol(client, mkt):
    response = client.get(f"/api/v1/markets/{mkt.symbol}/")
    assert response.status_code == 200
    assert response.json()["symbol"] == mkt.symbol
    assert response.json()["quote_asset"] == mkt.quote.symbol

    assert_error(client.get(f"/api/v1/markets/{mkt.symbol.lower()}/"), 404, "UNKNOWN_MARKET")


def test_credentials_are_not_needed_and_bad_ones_are_not_looked_at(client, mkt):
    client.credentials(HTTP_AUTHORIZATION="Bearer nonsense", HTTP_X_API_KEY="no.such")
    assert client.get(f"/api/v1/markets/{mkt.symbol}/ticker/").status_code == 200


# --------------------------------------------------------------------------------------
# Depth
# --------------------------------------------------------------------------------------


def test_depth_is_the_matchers_snapshot_with_its_sequence_trimmed_to_limit(client, mkt):
    bids = [["99.00", "1.000"], ["98.50", "2.500"], ["98.00", "0.001"]]
    asks = [["100.00", "3.000"], ["100.50", "0.500"], ["101.00", "7.000"]]
    publish_book(mkt, 42, bids, asks)

    # In the API's 8 places whatever precision the matcher wrote.
    bids8 = [[s8(p), s8(q)] for p, q in bids]
    asks8 = [[s8(p), s8(q)] for p, q in asks]

    whole = client.get(f"/api/v1/markets/{mkt.symbol}/depth/")
    assert whole.status_code == 200
    assert whole.json() == {
        "symbol": mkt.symbol,
        "source": "matcher",
        "sequence": 42,
        "bids": bids8,
        "asks": asks8,
    }

    top = client.get(f"/api/v1/markets/{mkt.symbol}/depth/", {"limit": 2}).json()
    assert (top["bids"], top["asks"]) == (bids8[:2], asks8[:2])
    assert top["sequence"] == 42


def test_depth_of_an_empty_published_book_has_no_levels(client, mkt):
    publish_book(mkt, 7, [], [])
    body = client.get(f"/api/v1/markets/{mkt.symbol}/depth/").json()
    assert (body["source"], body["sequence"], body["bids"], body["asks"]) == ("matcher", 7, [], [])


def test_without_a_snapshot_depth_is_the_open_orders_as_the_matcher_would_publish(client, mkt):
    maker, taker = funded(mkt), funded(mkt)
    place_order(maker, mkt, "BUY", "1", "99")
    place_order(taker, mkt, "BUY", "2", "99")
    place_order(maker, mkt, "BUY", "0.5", "98.5")
    gone = place_order(maker, mkt, "BUY", "4", "98")
    place_order(maker, mkt, "SELL", "2", "101")
    place_order(maker, mkt, "SELL", "1", "102", display_quantity=D("0.25"))  # iceberg
    matcher = MarketMatcher(mkt)
    matcher.run_batch()
    place_order(taker, mkt, "BUY", "0.5", "101")  # leaves 1.5 of the 101 ask
    order_cancel(account=maker, order=gone)
    matcher.run_batch()
    place_order(taker, mkt, "BUY", "9", "97")  # PENDING: not on the book yet

    body = client.get(f"/api/v1/markets/{mkt.symbol}/depth/").json()

    assert (body["source"], body["sequence"]) == ("database", None)
    assert body["bids"] == [[s8(99), s8(3)], [s8("98.5"), s8("0.5")]]
    assert body["asks"] == [[s8(101), s8("1.5")], [s8(102), s8("0.25")]]
    published = snapshot(matcher)
    assert body["bids"] == [[s8(p), s8(q)] for p, q in published["bids"]]
    assert body["asks"] == [[s8(p), s8(q)] for p, q in published["asks"]]

    top = client.get(f"/api/v1/markets/{mkt.symbol}/depth/", {"limit": 1}).json()
    assert (top["bids"], top["asks"]) == ([[s8(99), s8(3)]], [[s8(101), s8("1.5")]])


def test_a_malformed_snapshot_is_ignored_for_the_open_orders(client, mkt):
    sim.place(funded(mkt), mkt, "BUY", "1", "99")
    redis_client().set(book_key(mkt.symbol), b'{"sequence": 3, "bids": [["NaN?", "1"]]')
    body = client.get(f"/api/v1/markets/{mkt.symbol}/depth/").json()
    assert (body["source"], body["bids"], body["asks"]) == ("database", [[s8(99), s8(1)]], [])


# --------------------------------------------------------------------------------------
# Trades
# --------------------------------------------------------------------------------------


def test_recent_trades_come_newest_first_and_limit_keeps_the_newest(client, mkt):
    maker, taker = funded(mkt), funded(mkt)
    matcher = MarketMatcher(mkt)
    for price in ("100", "101", "102"):
        place_order(maker, mkt, "SELL", "1", price)
    matcher.run_batch()
    for price in ("100", "101", "102"):
        place_order(taker, mkt, "BUY", "1", price)
        matcher.run_batch()
    place_order(maker, mkt, "BUY", "0.2", "100.5")
    place_order(taker, mkt, "SELL", "0.2", "100.5")
    matcher.run_batch()

    body = client.get(f"/api/v1/markets/{mkt.symbol}/trades/").json()

    assert [t["sequence"] for t in body] == [4, 3, 2, 1]
    assert [t["price"] for t in body] == [s8("100.5"), s8(102), s8(101), s8(100)]
    newest = Trade.objects.get(market=mkt, sequence=4)
    assert body[0] == {
        "id": newest.pk,
        "sequence": 4,
        "price": s8("100.5"),
        "quantity": s8("0.2"),
        "quote_quantity": s8("20.1"),
        "side": "SELL",
        "executed_at": newest.executed_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    limited = client.get(f"/api/v1/markets/{mkt.symbol}/trades/", {"limit": 2}).json()
    assert [t["sequence"] for t in limited] == [4, 3]


def test_a_market_without_trades_has_an_empty_tape(client, mkt):
    assert client.get(f"/api/v1/markets/{mkt.symbol}/trades/").json() == []


# --------------------------------------------------------------------------------------
# Tickers
# --------------------------------------------------------------------------------------


def test_ticker_is_the_last_24_hours_of_trades_with_the_best_prices(client, mkt):
    now = timezone.now()
    trade_at(mkt, "80", "5", now - timedelta(hours=25))  # outside the window
    trade_at(mkt, "100", "1", now - timedelta(hours=23))
    trade_at(mkt, "110", "2", now - timedelta(hours=2))
    trade_at(mkt, "90", "1", now - timedelta(hours=1), taker_side=Side.SELL)
    trade_at(mkt, "105", "0.5", now - timedelta(minutes=10))
    publish_book(mkt, 9, [["104.00", "1.000"]], [["106.00", "2.000"]])

    body = client.get(f"/api/v1/markets/{mkt.symbol}/ticker/").json()

    assert {k: v for k, v in body.items() if k not in ("open_time", "close_time")} == {
        "symbol": mkt.symbol,
        "last_price": s8(105),
        "last_trade_at": (now - timedelta(minutes=10)).isoformat().replace("+00:00", "Z"),
        "open": s8(100),
        "high": s8(110),
        "low": s8(90),
        "change": s8(5),
        "change_percent": "5.00",
        "volume": s8("4.5"),  # 1 + 2 + 1 + 0.5
        "quote_volume": s8("462.5"),  # 100 + 220 + 90 + 52.5
        "trade_count": 4,
        "best_bid": s8(104),
        "best_ask": s8(106),
    }
    close = datetime.fromisoformat(body["close_time"])
    assert close - datetime.fromisoformat(body["open_time"]) == timedelta(hours=24)
    assert now <= close <= timezone.now()


def test_a_falling_market_has_a_negative_change_rounded_to_two_places(client, mkt):
    now = timezone.now()
    trade_at(mkt, "3", "1", now - timedelta(hours=3))
    trade_at(mkt, "2", "1", now - timedelta(hours=1))
    body = client.get(f"/api/v1/markets/{mkt.symbol}/ticker/").json()
    assert (body["change"], body["change_percent"]) == (s8(-1), "-33.33")


def test_a_quiet_market_keeps_its_last_price_but_has_no_24h_range(client, mkt):
    trade_at(mkt, "50", "1", timezone.now() - timedelta(days=3))
    seller = funded(mkt)
    sim.place(seller, mkt, "SELL", "1", "55")  # no published book: best ask from the orders

    body = client.get(f"/api/v1/markets/{mkt.symbol}/ticker/").json()

    assert body["last_price"] == s8(50)
    for field in ("open", "high", "low", "change", "change_percent", "best_bid"):
        assert body[field] is None, field
    assert (body["volume"], body["quote_volume"], body["trade_count"]) == (s8(0), s8(0), 0)
    assert body["best_ask"] == s8(55)


def test_tickers_cover_every_market_in_one_response(client, make_market):
    busy, idle = make_market(), make_market()
    trade_at(busy, "10", "3", timezone.now() - timedelta(minutes=5))
    publish_book(busy, 1, [["9.00", "1.000"]], [])

    by_symbol = {t["symbol"]: t for t in client.get("/api/v1/tickers/").json()}

    assert by_symbol[busy.symbol]["last_price"] == s8(10)
    assert by_symbol[busy.symbol]["quote_volume"] == s8(30)
    assert (by_symbol[busy.symbol]["best_bid"], by_symbol[busy.symbol]["best_ask"]) == (
        s8(9),
        None,
    )
    assert by_symbol[idle.symbol]["last_price"] is None
    assert by_symbol[idle.symbol]["trade_count"] == 0
    assert by_symbol[idle.symbol] == client.get(f"/api/v1/markets/{idle.symbol}/ticker/").json() | {
        "open_time": by_symbol[idle.symbol]["open_time"],
        "close_time": by_symbol[idle.symbol]["close_time"],
    }


# --------------------------------------------------------------------------------------
# Candles
# --------------------------------------------------------------------------------------

T = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def candle_trades(mkt) -> Market:
    """Trades on both sides of the 10:00, 10:05 and midnight boundaries. Two share
    10:00:00 exactly, written out of sequence order: sequence, not time or insertion,
    decides which opens the bucket."""
    trade_at(mkt, "100", "1", T - timedelta(microseconds=1), sequence=1)  # 09:59:59.999999
    trade_at(mkt, "100.5", "1", T, sequence=3)
    trade_at(mkt, "101", "2", T, sequence=2)
    trade_at(mkt, "99", "1", T + timedelta(seconds=30), sequence=4)
    trade_at(mkt, "103", "1", T + timedelta(minutes=4, seconds=59), sequence=5)
    trade_at(mkt, "102", "1", T + timedelta(minutes=5), sequence=6)
    trade_at(mkt, "98", "1", datetime(2024, 3, 6, tzinfo=UTC), sequence=7)
    return mkt


def candle(open_time, step, o, h, low, c, volume, quote_volume, count) -> dict:
    return {
        "open_time": iso(open_time),
        "close_time": iso(open_time + step),
        "open": s8(o),
        "high": s8(h),
        "low": s8(low),
        "close": s8(c),
        "volume": s8(volume),
        "quote_volume": s8(quote_volume),
        "trade_count": count,
    }


M1, M5, H1, D1 = (timedelta(minutes=1), timedelta(minutes=5), timedelta(hours=1), timedelta(1))
DAY = datetime(2024, 3, 5, tzinfo=UTC)
EXPECTED_CANDLES = {
    "1m": [
        candle(T - M1, M1, 100, 100, 100, 100, 1, 100, 1),
        # 101 (seq 2), 100.5 (seq 3), 99: 202 + 100.5 + 99
        candle(T, M1, 101, 101, 99, 99, 4, "401.5", 3),
        candle(T + 4 * M1, M1, 103, 103, 103, 103, 1, 103, 1),
        candle(T + 5 * M1, M1, 102, 102, 102, 102, 1, 102, 1),
    ],
    "5m": [
        candle(T - M5, M5, 100, 100, 100, 100, 1, 100, 1),
        candle(T, M5, 101, 103, 99, 103, 5, "504.5", 4),
        candle(T + M5, M5, 102, 102, 102, 102, 1, 102, 1),
        candle(DAY + D1, M5, 98, 98, 98, 98, 1, 98, 1),
    ],
    "1h": [
        candle(T - H1, H1, 100, 100, 100, 100, 1, 100, 1),
        candle(T, H1, 101, 103, 99, 102, 6, "606.5", 5),
        candle(DAY + D1, H1, 98, 98, 98, 98, 1, 98, 1),
    ],
    "1d": [
        candle(DAY, D1, 100, 103, 99, 102, 7, "706.5", 6),
        candle(DAY + D1, D1, 98, 98, 98, 98, 1, 98, 1),
    ],
}


@pytest.mark.parametrize("interval", list(EXPECTED_CANDLES))
def test_candles_bucket_trades_with_open_and_close_by_sequence(client, candle_trades, interval):
    response = client.get(
        f"/api/v1/markets/{candle_trades.symbol}/candles/",
        {"interval": interval, "start": "2024-03-05T09:00:00Z", "end": "2024-03-06T00:00:00Z"},
    )
    assert response.status_code == 200, response.json()
    # For 1m, the 500 buckets from 09:00 end long before midnight's trade.
    assert response.json() == EXPECTED_CANDLES[interval]


def test_candles_accept_unix_seconds_as_well_as_iso_8601(client, candle_trades):
    url = f"/api/v1/markets/{candle_trades.symbol}/candles/"
    start, end = T - M1, T + 5 * M1
    as_iso = client.get(url, {"interval": "1m", "start": iso(start), "end": iso(end)}).json()
    as_unix = client.get(
        url,
        {"interval": "1m", "start": str(int(start.timestamp())), "end": f"{end.timestamp()}"},
    ).json()
    assert as_unix == as_iso == EXPECTED_CANDLES["1m"]
    offset = client.get(url, {"interval": "1m", "start": "2024-03-05T11:59:00+02:00"}).json()
    assert offset[0] == EXPECTED_CANDLES["1m"][0]


def test_candle_limits_count_buckets_from_start_or_back_from_end(client, candle_trades):
    url = f"/api/v1/markets/{candle_trades.symbol}/candles/"
    from_start = client.get(url, {"interval": "1m", "start": iso(T - M1), "limit": 2}).json()
    assert from_start == EXPECTED_CANDLES["1m"][:2]

    # end inside the 10:05 bucket: it and the 10:04 bucket, each whole.
    back = client.get(url, {"interval": "1m", "end": iso(T + 5 * M1), "limit": 2}).json()
    assert back == EXPECTED_CANDLES["1m"][2:]

    # start and end bound it together, and limit still caps from start
    both = client.get(
        url, {"interval": "5m", "start": iso(T), "end": iso(T + M5), "limit": 1}
    ).json()
    assert both == EXPECTED_CANDLES["5m"][1:2]
    one_instant = client.get(url, {"interval": "1h", "start": iso(T), "end": iso(T)}).json()
    assert one_instant == EXPECTED_CANDLES["1h"][1:2]


def test_candles_default_to_the_latest_buckets_up_to_now(client, mkt):
    now = timezone.now()
    trade_at(mkt, "10", "1", now - timedelta(hours=3))
    trade_at(mkt, "11", "1", now - timedelta(seconds=1))
    trade_at(mkt, "12", "1", now - timedelta(days=30))  # older than 500 one-hour buckets

    body = client.get(f"/api/v1/markets/{mkt.symbol}/candles/", {"interval": "1h"}).json()

    assert [c["close"] for c in body] == [s8(10), s8(11)]
    assert client.get(f"/api/v1/markets/{mkt.symbol}/candles/", {"interval": "1d"}).json()[0][
        "close"
    ] == s8(12)


def test_candles_of_a_market_without_trades_are_empty(client, mkt):
    assert client.get(f"/api/v1/markets/{mkt.symbol}/candles/", {"interval": "5m"}).json() == []


# --------------------------------------------------------------------------------------
# Bad requests: always a 4xx in the one error shape, never a 500
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["", "depth/", "trades/", "ticker/", "candles/?interval=1m"],
)
@pytest.mark.parametrize(
    "symbol", ["NOPE-USDC", "eth-usdc", "X" * 300, "%F0%9F%92%A5", "ETH-USDC%00", "%20"]
)
def test_an_unknown_market_is_404_unknown_market(client, mkt, path, symbol):
    body = assert_error(client.get(f"/api/v1/markets/{symbol}/{path}"), 404, "UNKNOWN_MARKET")
    assert "details" not in body


# An empty optional parameter counts as absent (DRF's reading of query strings).
LIMITS = ["0", "-1", "abc", "1.5", "1e3", "NaN", "Infinity", "9" * 40, "0x10"]


@pytest.mark.parametrize(("endpoint", "too_many"), [("depth/", "101"), ("trades/", "1001")])
@pytest.mark.parametrize("limit", [*LIMITS, "too_many"])
def test_a_bad_limit_is_a_validation_error(client, mkt, endpoint, too_many, limit):
    limit = too_many if limit == "too_many" else limit
    response = client.get(f"/api/v1/markets/{mkt.symbol}/{endpoint}", {"limit": limit})
    assert_error(response, 400, "VALIDATION_ERROR", "limit")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "interval"),
        ({"interval": "2m"}, "interval"),
        ({"interval": "1M"}, "interval"),
        ({"interval": ""}, "interval"),
        ({"interval": "1m", "limit": "0"}, "limit"),
        ({"interval": "1m", "limit": "-5"}, "limit"),
        ({"interval": "1m", "limit": "1001"}, "limit"),
        ({"interval": "1m", "limit": "9" * 40}, "limit"),
        ({"interval": "1m", "limit": "lots"}, "limit"),
        ({"interval": "1m", "start": "yesterday"}, "start"),
        ({"interval": "1m", "start": "2024-13-01T00:00:00Z"}, "start"),
        ({"interval": "1m", "start": "2024-02-30T00:00:00"}, "start"),
        ({"interval": "1m", "start": "-60"}, "start"),
        ({"interval": "1m", "start": "10000-01-01T00:00:00Z"}, "start"),
        ({"interval": "1m", "start": "1e9"}, "start"),
        ({"interval": "1m", "start": "NaN"}, "start"),
        ({"interval": "1m", "end": "999999999999"}, "end"),
        ({"interval": "1m", "end": "123456789012345678901234567890"}, "end"),
        (
            {"interval": "1m", "start": "2024-03-05T10:00:01Z", "end": "2024-03-05T10:00:00Z"},
            "start",
        ),
        ({"interval": "1m", "start": "1709632801", "end": "1709632800"}, "start"),
    ],
)
def test_bad_candle_parameters_are_validation_errors(client, mkt, params, field):
    response = client.get(f"/api/v1/markets/{mkt.symbol}/candles/", params)
    assert_error(response, 400, "VALIDATION_ERROR", field)


@pytest.mark.parametrize(
    "params",
    [
        {"interval": "1d", "start": "0", "limit": "1000"},
        {"interval": "1d", "start": "99999999999.999999", "limit": "1000"},
        {"interval": "1d", "end": "0001-01-01T00:00:00Z", "limit": "1000"},
        {"interval": "1d", "start": "0001-01-01T00:00:00+05:00"},
        {"interval": "1d", "end": "9999-12-31T23:59:59.999999Z", "limit": "1000"},
        {"interval": "1d", "start": "9999-12-31T23:59:59-12:00"},
        {"interval": "1h", "start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"},
    ],
)
def test_the_most_distant_moments_are_answered_not_refused(client, candle_trades, params):
    response = client.get(f"/api/v1/markets/{candle_trades.symbol}/candles/", params)
    assert response.status_code == 200, response.json()
    assert response.json() == []


def test_the_largest_limits_are_answered(client, mkt):
    assert client.get(f"/api/v1/markets/{mkt.symbol}/depth/", {"limit": "100"}).status_code == 200
    trades = client.get(f"/api/v1/markets/{mkt.symbol}/trades/", {"limit": "1000"})
    assert trades.status_code == 200


def test_market_data_endpoints_are_read_only(client, mkt):
    response = client.post(f"/api/v1/markets/{mkt.symbol}/depth/", {}, format="json")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
