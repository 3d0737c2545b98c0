"""What the portfolio endpoints take and give: positions, P&L, snapshots, metrics and
trading statistics. Parsing and shapes only: the figures are the selectors'."""

from __future__ import annotations

import datetime as dt

from rest_framework import serializers

from portfolio.models import PortfolioSnapshot, Position, SnapshotKind, TradingStats


def money_field(**kwargs) -> serializers.DecimalField:
    """A computed amount (a product of a quantity and a mark has more places than the
    8 stored): rendered as a string to 8 places."""
    return serializers.DecimalField(max_digits=40, decimal_places=8, **kwargs)


# --- Query strings --------------------------------------------------------------------


class _Range:
    def validate(self, data: dict) -> dict:
        if "since" in data and "until" in data and data["since"] > data["until"]:
            raise serializers.ValidationError({"until": ["must not be before since"]})
        return data


class DayRangeQuerySerializer(_Range, serializers.Serializer):
    since = serializers.DateField(required=False, help_text="First UTC day counted.")
    until = serializers.DateField(required=False, help_text="Last UTC day counted.")


class StatsQuerySerializer(DayRangeQuerySerializer):
    market = serializers.CharField(max_length=25, required=False)


class TimeRangeQuerySerializer(_Range, serializers.Serializer):
    def validate(self, data: dict) -> dict:
        for name in ("since", "until"):
            if name in data:
                try:
                    data[name] = data[name].astimezone(dt.UTC)
                except OverflowError:
                    raise serializers.ValidationError({name: ["out of range"]}) from None
        return super().validate(data)

    since = serializers.DateTimeField(required=False, help_text="From this moment (inclusive).")
    until = serializers.DateTimeField(required=False, help_text="Up to this moment (exclusive).")


class SnapshotKindQuerySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=["interval", "daily"], default="daily", help_text="The series."
    )

    def validate_kind(self, value: str) -> str:
        return SnapshotKind(value.upper()).value


class SnapshotQuerySerializer(TimeRangeQuerySerializer, SnapshotKindQuerySerializer):
    """``since``/``until`` bound the snapshots' period start."""


class GainsQuerySerializer(serializers.Serializer):
    year = serializers.IntegerField(
        min_value=1970, max_value=9998, help_text="Calendar year (UTC)."
    )


# --- Responses ------------------------------------------------------------------------


class PositionSerializer(serializers.ModelSerializer):
    asset = serializers.CharField(source="asset.symbol")
    quote = serializers.CharField(source="quote.symbol")

    class Meta:
        model = Position
        fields = [
            "asset",
            "quote",
            "quantity",
            "average_entry_price",
            "cost_basis",
            "realized_pnl",
            "fees_paid",
            "excess_sold",
            "trade_count",
            "updated_at",
        ]
        read_only_fields = fields


class PositionValuationSerializer(PositionSerializer):
    """A position with the market's last trade price: unrealized P&L is
    ``quantity × mark − cost_basis`` (null when the market has not traded)."""

    mark = money_field(allow_null=True)
    unrealized_pnl = money_field(allow_null=True)

    class Meta(PositionSerializer.Meta):
        fields = [*PositionSerializer.Meta.fields, "mark", "unrealized_pnl"]
        read_only_fields = fields


class PnlSerializer(serializers.Serializer):
    """P&L in one quote asset: realized in the period (from the daily statistics, net of
    fees), and unrealized now (positions marked at the last trade price)."""

    quote = serializers.CharField()
    realized_pnl = money_field(help_text="Realized in the period, net of fees.")
    fees_paid = money_field(help_text="Fees paid in the period.")
    quote_volume = money_field(help_text="Traded in the period.")
    trade_count = serializers.IntegerField()
    unrealized_pnl = money_field(help_text="Now, of the positions marked in this quote.")
    value = money_field(help_text="Now: what is held, marked in this quote.")
    unmarked_assets = serializers.ListField(
        child=serializers.CharField(), help_text="Held, but their market has not traded."
    )


class PnlSummarySerializer(serializers.Serializer):
    since = serializers.DateField(allow_null=True)
    until = serializers.DateField(allow_null=True)
    totals = PnlSerializer(many=True)


class CompositionLineSerializer(serializers.Serializer):
    asset = serializers.CharField()
    quantity = serializers.CharField()
    mark = serializers.CharField(allow_null=True)
    value = serializers.CharField(allow_null=True)


class PortfolioSnapshotSerializer(serializers.ModelSerializer):
    quote = serializers.CharField(source="quote.symbol")
    composition = CompositionLineSerializer(many=True)

    class Meta:
        model = PortfolioSnapshot
        fields = [
            "id",
            "kind",
            "period_start",
            "period_end",
            "quote",
            "total_value",
            "composition",
            "net_flows",
            "realized_pnl",
            "unrealized_pnl",
            "taken_at",
        ]
        read_only_fields = fields


class PortfolioMetricsSerializer(serializers.Serializer):
    """Performance and risk of the snapshot series (``portfolio.metrics``); a statistic
    the series is too short for is null."""

    kind = serializers.CharField()
    quote = serializers.CharField(allow_null=True)
    snapshots = serializers.IntegerField(help_text="Snapshots in the series.")
    returns = serializers.IntegerField(help_text="Periods with a return.")
    first_period_start = serializers.DateTimeField(allow_null=True)
    last_period_end = serializers.DateTimeField(allow_null=True)
    volatility = serializers.FloatField(allow_null=True, help_text="Annualised.")
    sharpe_ratio = serializers.FloatField(allow_null=True, help_text="Annualised, risk-free 0.")
    max_drawdown = serializers.FloatField(allow_null=True, help_text="A fraction of the peak.")
    value_at_risk_95 = serializers.FloatField(
        allow_null=True, help_text="Historical, one period, 95 %: a fraction of the value."
    )
    roi = serializers.FloatField(allow_null=True)
    win_rate = serializers.FloatField(
        allow_null=True,
        help_text="Of your sales in the series' window whose cost is known (FIFO), the "
        "fraction that realized a gain.",
    )
    average_trade_size = serializers.FloatField(
        allow_null=True, help_text="Mean notional of your trades in the window, in the quote."
    )


class TradingStatsSerializer(serializers.ModelSerializer):
    market = serializers.CharField(source="market.symbol")
    # Generated columns: DRF would render them as bare numbers.
    volume = serializers.DecimalField(max_digits=30, decimal_places=8, read_only=True)
    quote_volume = serializers.DecimalField(max_digits=30, decimal_places=8, read_only=True)

    class Meta:
        model = TradingStats
        fields = [
            "id",
            "market",
            "day",
            "buy_volume",
            "sell_volume",
            "volume",
            "buy_quote_volume",
            "sell_quote_volume",
            "quote_volume",
            "trade_count",
            "maker_count",
            "taker_count",
            "maker_quote_volume",
            "taker_quote_volume",
            "fees_paid",
            "realized_pnl",
        ]
        read_only_fields = fields


class TradingWindowSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    since = serializers.DateField(help_text="The first UTC day counted (today included).")
    quote_volume = money_field()
    buy_quote_volume = money_field()
    sell_quote_volume = money_field()
    maker_quote_volume = money_field()
    taker_quote_volume = money_field()
    trade_count = serializers.IntegerField()
    maker_count = serializers.IntegerField()
    taker_count = serializers.IntegerField()
    fees_paid = money_field()
    realized_pnl = money_field()


class TradingWindowsSerializer(serializers.Serializer):
    quote = serializers.CharField()
    h24 = TradingWindowSerializer()
    d7 = TradingWindowSerializer()
    d30 = TradingWindowSerializer()
