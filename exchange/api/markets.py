"""Public market data: markets and their rules, depth, trades, tickers, candles.

Anyone may read these: no credential is asked for or looked at. Decimals are strings
(JavaScript numbers would round them), times are ISO 8601 in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.urls import path
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dex.api.errors import ApiError
from exchange import selectors
from exchange.models import Market, MarketStatus, Side

TAG = "market data"
MAX_DEPTH = 100
MAX_TRADES = 1000
MAX_CANDLES = 1000
EPOCH = selectors.EPOCH
SYMBOL = OpenApiParameter(
    "symbol",
    str,
    OpenApiParameter.PATH,
    required=True,
    pattern=f"^{selectors.SYMBOL.pattern}$",
    description="The market, as `BASE-QUOTE` (`ETH-USDC`); case matters.",
)

# --------------------------------------------------------------------------------------
# Fields
# --------------------------------------------------------------------------------------


@extend_schema_field({"type": "string", "format": "decimal", "example": "1234.50000000"})
class DecimalString(serializers.Field):
    """A decimal rendered as a plain string (never in exponent form)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value: Decimal | str) -> str:
        return value if isinstance(value, str) else format(value, "f")


_UNIX_SECONDS = r"\d{1,11}(\.\d{1,6})?"


@extend_schema_field(
    {
        "anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "string", "pattern": f"^{_UNIX_SECONDS}$"},
        ],
        "description": "ISO 8601 date-time (UTC when it has no offset) or Unix seconds.",
        "example": "2024-01-01T00:00:00Z",
    }
)
class TimestampField(serializers.Field):
    """A moment given as ISO 8601 or as Unix seconds (``1704067200``, ``1704067200.5``).
    Any moment Python can hold is accepted: one outside the trades' range simply finds
    no trades."""

    default_error_messages = {"invalid": "give an ISO 8601 date-time or Unix seconds"}

    def to_internal_value(self, data) -> datetime:
        text = data.strip() if isinstance(data, str) else ""
        try:
            if re.fullmatch(_UNIX_SECONDS, text):
                seconds = Decimal(text)
                return EPOCH + timedelta(
                    seconds=int(seconds), microseconds=int(seconds % 1 * 1_000_000)
                )
            moment = parse_datetime(text)
        except ValueError:
            self.fail("invalid")
        if moment is None:
            self.fail("invalid")
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        try:
            return moment.astimezone(UTC)
        except OverflowError:  # within an offset of the first or last representable day
            return selectors.EARLIEST if moment.year == 1 else selectors.LATEST


def _levels() -> serializers.ListField:
    return serializers.ListField(
        child=serializers.ListField(child=serializers.CharField(), min_length=2, max_length=2),
        help_text="[[price, quantity], …] as decimal strings, best price first.",
    )


# --------------------------------------------------------------------------------------
# What the endpoints give
# --------------------------------------------------------------------------------------


class ApiErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="What is wrong with each field, when a field is to blame.",
    )


class MarketSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    base_asset = serializers.CharField(source="base.symbol")
    quote_asset = serializers.CharField(source="quote.symbol")
    status = serializers.ChoiceField(choices=MarketStatus.choices)
    tick_size = DecimalString(help_text="Smallest price increment.")
    lot_size = DecimalString(help_text="Smallest quantity increment.")
    min_quantity = DecimalString()
    min_notional = DecimalString(help_text="Smallest price × quantity, in the quote asset.")
    maker_fee_rate = DecimalString(help_text="Fraction of notional; negative is a rebate.")
    taker_fee_rate = DecimalString(help_text="Fraction of notional.")
    price_band = DecimalString(
        help_text="A market order never trades further than this fraction from the best price."
    )


class DepthSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    source = serializers.ChoiceField(
        choices=["matcher", "database"],
        help_text="`matcher`: the matcher's published book. `database`: no published book "
        "yet, so rebuilt from the open orders, without a sequence.",
    )
    sequence = serializers.IntegerField(
        allow_null=True,
        help_text="The matcher's journal position this book reflects; compare with the "
        "`book.delta` stream. Null when `source` is `database`.",
    )
    bids = _levels()
    asks = _levels()


class TradeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    sequence = serializers.IntegerField(help_text="Per-market trade number, gap-free.")
    price = DecimalString()
    quantity = DecimalString()
    quote_quantity = DecimalString(help_text="price × quantity.")
    side = serializers.ChoiceField(
        choices=Side.choices, source="aggressor_side", help_text="The taker's side."
    )
    executed_at = serializers.DateTimeField()


class TickerSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    open_time = serializers.DateTimeField(help_text="The window is (open_time, close_time].")
    close_time = serializers.DateTimeField()
    last_price = DecimalString(allow_null=True, help_text="The latest trade's, however old.")
    last_trade_at = serializers.DateTimeField(allow_null=True)
    open = DecimalString(allow_null=True, help_text="The window's first trade price.")
    high = DecimalString(allow_null=True)
    low = DecimalString(allow_null=True)
    change = DecimalString(allow_null=True, help_text="last_price − open.")
    change_percent = DecimalString(allow_null=True, help_text="change / open × 100, 2 places.")
    volume = DecimalString(help_text="Base asset traded in the window.")
    quote_volume = DecimalString(help_text="Quote asset traded in the window.")
    trade_count = serializers.IntegerField()
    best_bid = DecimalString(allow_null=True)
    best_ask = DecimalString(allow_null=True)


class CandleSerializer(serializers.Serializer):
    open_time = serializers.DateTimeField()
    close_time = serializers.DateTimeField(help_text="The bucket's end (exclusive).")
    open = DecimalString()
    high = DecimalString()
    low = DecimalString()
    close = DecimalString()
    volume = DecimalString()
    quote_volume = DecimalString()
    trade_count = serializers.IntegerField()


# --------------------------------------------------------------------------------------
# What the endpoints take
# --------------------------------------------------------------------------------------


class DepthQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=1, max_value=MAX_DEPTH, default=50, help_text="Price levels per side."
    )


class TradesQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_TRADES, default=100)


class CandlesQuerySerializer(serializers.Serializer):
    interval = serializers.ChoiceField(choices=list(selectors.CANDLE_INTERVALS))
    start = TimestampField(required=False, help_text="First bucket: the one holding this moment.")
    end = TimestampField(
        required=False, help_text="Last bucket: the one holding this moment (default now)."
    )
    limit = serializers.IntegerField(
        min_value=1,
        max_value=MAX_CANDLES,
        default=500,
        help_text="At most this many buckets: the first from `start` when it is given, "
        "otherwise the last up to `end`. Buckets without trades are left out.",
    )

    def validate(self, attrs: dict) -> dict:
        if "start" in attrs and "end" in attrs and attrs["start"] > attrs["end"]:
            raise serializers.ValidationError({"start": ["must not be after end"]})
        return attrs


# --------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------

ERRORS_404 = {404: OpenApiResponse(ApiErrorSerializer, description="UNKNOWN_MARKET")}
ERRORS_400_404 = {
    400: OpenApiResponse(ApiErrorSerializer, description="VALIDATION_ERROR"),
    **ERRORS_404,
}


def _query(serializer_class: type[serializers.Serializer], request: Request) -> dict:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _market(symbol: str) -> Market:
    market = selectors.market_get(symbol=symbol)
    if market is None:
        raise ApiError("UNKNOWN_MARKET", f"there is no market {symbol!r}", status=404)
    return market


class PublicView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]


class MarketListView(PublicView):
    @extend_schema(
        tags=[TAG], summary="Markets and their trading rules", responses=MarketSerializer(many=True)
    )
    def get(self, request: Request) -> Response:
        return Response(MarketSerializer(selectors.market_list(), many=True).data)


class MarketDetailView(PublicView):
    @extend_schema(
        tags=[TAG],
        summary="One market and its trading rules",
        parameters=[SYMBOL],
        responses={200: MarketSerializer, **ERRORS_404},
    )
    def get(self, request: Request, symbol: str) -> Response:
        return Response(MarketSerializer(_market(symbol)).data)


class DepthView(PublicView):
    @extend_schema(
        tags=[TAG],
        summary="Order book depth",
        description="The matcher's latest book with its sequence number; before the "
        "matcher has published one, the open orders aggregated by price "
        "(`source: database`, `sequence: null`).",
        parameters=[SYMBOL, DepthQuerySerializer],
        responses={200: DepthSerializer, **ERRORS_400_404},
    )
    def get(self, request: Request, symbol: str) -> Response:
        market = _market(symbol)
        query = _query(DepthQuerySerializer, request)
        depth = selectors.depth_get(market=market, limit=query["limit"])
        return Response(DepthSerializer(depth).data)


class TradeListView(PublicView):
    @extend_schema(
        tags=[TAG],
        summary="Recent trades, newest first",
        parameters=[SYMBOL, TradesQuerySerializer],
        responses={200: TradeSerializer(many=True), **ERRORS_400_404},
    )
    def get(self, request: Request, symbol: str) -> Response:
        market = _market(symbol)
        query = _query(TradesQuerySerializer, request)
        trades = selectors.trade_list_recent(market=market, limit=query["limit"])
        return Response(TradeSerializer(trades, many=True).data)


class TickerView(PublicView):
    @extend_schema(
        tags=[TAG],
        summary="24 h ticker",
        parameters=[SYMBOL],
        responses={200: TickerSerializer, **ERRORS_404},
    )
    def get(self, request: Request, symbol: str) -> Response:
        return Response(TickerSerializer(selectors.ticker_24h(market=_market(symbol))).data)


class TickerListView(PublicView):
    @extend_schema(
        tags=[TAG], summary="24 h tickers of every market", responses=TickerSerializer(many=True)
    )
    def get(self, request: Request) -> Response:
        tickers = selectors.ticker_list(markets=selectors.market_list())
        return Response(TickerSerializer(tickers, many=True).data)


class CandleListView(PublicView):
    @extend_schema(
        tags=[TAG],
        summary="OHLCV candles, oldest first",
        description="Buckets are aligned on the Unix epoch (days start at 00:00 UTC). "
        "`open` and `close` are the bucket's first and last trade prices.",
        parameters=[SYMBOL, CandlesQuerySerializer],
        responses={200: CandleSerializer(many=True), **ERRORS_400_404},
    )
    def get(self, request: Request, symbol: str) -> Response:
        market = _market(symbol)
        query = _query(CandlesQuerySerializer, request)
        candles = selectors.candle_list(
            market=market,
            interval=query["interval"],
            start=query.get("start"),
            end=query.get("end"),
            limit=query["limit"],
        )
        return Response(CandleSerializer(candles, many=True).data)


urlpatterns = [
    path("markets/", MarketListView.as_view(), name="market-list"),
    path("markets/<str:symbol>/", MarketDetailView.as_view(), name="market-detail"),
    path("markets/<str:symbol>/depth/", DepthView.as_view(), name="market-depth"),
    path("markets/<str:symbol>/trades/", TradeListView.as_view(), name="market-trades"),
    path("markets/<str:symbol>/ticker/", TickerView.as_view(), name="market-ticker"),
    path("markets/<str:symbol>/candles/", CandleListView.as_view(), name="market-candles"),
    path("tickers/", TickerListView.as_view(), name="ticker-list"),
]
