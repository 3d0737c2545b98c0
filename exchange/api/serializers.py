"""What the order endpoints take and give. Parsing only: the rules are the services'."""

from __future__ import annotations

from datetime import UTC, datetime

from rest_framework import serializers

from dex.api.fields import Uint256Field, UnixTimeField, amount_field, price_field
from dex.api.rendering import ParseOnce, RenderOnce
from exchange.models import (
    Order,
    OrderStatus,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
    Trade,
)
from exchange.services.orders import OrderRequest

CLIENT_ORDER_ID = r"^[A-Za-z0-9_.:-]{1,64}$"
HEX_SIGNATURE = r"^0x[0-9a-fA-F]{130}$"
HEX_HASH = r"^0x[0-9a-fA-F]{64}$"


class OrderPlaceSerializer(ParseOnce, serializers.Serializer):
    """A signed order. Every field but ``signature`` and ``order_hash`` is in the signed
    EIP-712 struct (``GET /api/v1/eip712/``); amounts as decimal strings. Parsed with
    fields built once (``ParseOnce``): every order request validates one or more."""

    market = serializers.CharField(max_length=25)
    client_order_id = serializers.RegexField(CLIENT_ORDER_ID)
    side = serializers.ChoiceField(Side.choices)
    type = serializers.ChoiceField(OrderType.choices)
    time_in_force = serializers.ChoiceField(
        TimeInForce.choices,
        required=False,
        help_text="Limit types: GTC (the default), IOC, FOK or GTT. Market, stop-market and "
        "take-profit-market orders: IOC only (the default).",
    )
    price = price_field(required=False)
    stop_price = price_field(required=False)
    protection_price = price_field(required=False)
    quantity = amount_field(required=False)
    quote_quantity = amount_field(required=False)
    display_quantity = amount_field(required=False)
    post_only = serializers.BooleanField(
        default=False, help_text="Rest or be rejected: only on GTC or GTT LIMIT orders."
    )
    self_trade_prevention = serializers.ChoiceField(
        SelfTradePrevention.choices, default=SelfTradePrevention.EXPIRE_TAKER
    )
    expires_at = UnixTimeField(required=False, help_text="GTT expiry, Unix seconds.")
    nonce = Uint256Field()
    signature = serializers.RegexField(HEX_SIGNATURE, help_text="65-byte EIP-712 signature.")
    order_hash = serializers.RegexField(
        HEX_HASH, required=False, help_text="Optional: checked against the server's hash."
    )


def order_request_from(validated: dict) -> OrderRequest:
    """The service's request from an ``OrderPlaceSerializer``'s validated data."""
    data = dict(validated)
    data.pop("market")
    expires_at = data.pop("expires_at", None)
    return OrderRequest(
        **(data | {"order_hash": data.get("order_hash", "")}),
        expires_at=datetime.fromtimestamp(expires_at, tz=UTC) if expires_at else None,
    )


BATCH_MAX_ORDERS = 20


class OrderBatchSerializer(serializers.Serializer):
    orders = OrderPlaceSerializer(many=True, allow_empty=False, max_length=BATCH_MAX_ORDERS)


class OrderAmendSerializer(serializers.Serializer):
    """A signed amend: ``price``, ``quantity`` and ``nonce`` are in the signed EIP-712
    ``Amend`` struct (``GET /api/v1/eip712/``) with the order's hash; a field left out
    is signed as 0 (unchanged). The nonce is the account's, used once per amend."""

    price = price_field(required=False)
    quantity = amount_field(required=False)
    nonce = Uint256Field()
    signature = serializers.RegexField(HEX_SIGNATURE, help_text="65-byte EIP-712 signature.")

    def validate(self, attrs):
        if "price" not in attrs and "quantity" not in attrs:
            raise serializers.ValidationError("give a new price or quantity")
        return attrs


class CancelAllSerializer(serializers.Serializer):
    market = serializers.CharField(max_length=25, required=False)


class OrderSerializer(RenderOnce, serializers.ModelSerializer):
    """An order as the API shows it (rendered with fields built once: ``RenderOnce``)."""

    market = serializers.CharField(source="market.symbol", read_only=True)
    nonce = Uint256Field(read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "client_order_id",
            "market",
            "side",
            "type",
            "time_in_force",
            "post_only",
            "self_trade_prevention",
            "price",
            "stop_price",
            "protection_price",
            "quantity",
            "quote_quantity",
            "display_quantity",
            "filled",
            "remaining",
            "filled_quote",
            "average_price",
            "status",
            "reason",
            "maker_fee_rate",
            "taker_fee_rate",
            "nonce",
            "order_hash",
            "expires_at",
            "sequence",
            "created_at",
            "accepted_at",
            "done_at",
            "updated_at",
        ]
        read_only_fields = fields


class OrderBatchItemSerializer(serializers.Serializer):
    """One order of a batch: the order, or why it was refused."""

    ok = serializers.BooleanField()
    order = OrderSerializer(required=False, allow_null=True)
    code = serializers.CharField(required=False)
    message = serializers.CharField(required=False)
    details = serializers.DictField(required=False)


class OrderBatchResultSerializer(serializers.Serializer):
    results = OrderBatchItemSerializer(many=True)


class OrderListQuerySerializer(serializers.Serializer):
    market = serializers.CharField(max_length=25, required=False)
    status = serializers.MultipleChoiceField(choices=OrderStatus.choices, required=False)
    side = serializers.ChoiceField(Side.choices, required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)


class FillListQuerySerializer(serializers.Serializer):
    market = serializers.CharField(max_length=25, required=False)
    order_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)


class FillSerializer(serializers.ModelSerializer):
    """A trade seen from one side: the caller's order, side, role and fee."""

    market = serializers.CharField(source="market.symbol", read_only=True)
    order_id = serializers.SerializerMethodField()
    side = serializers.SerializerMethodField()
    liquidity = serializers.SerializerMethodField()
    fee = serializers.SerializerMethodField()
    fee_asset = serializers.CharField(source="market.quote.symbol", read_only=True)

    class Meta:
        model = Trade
        fields = [
            "id",
            "market",
            "sequence",
            "order_id",
            "side",
            "liquidity",
            "price",
            "quantity",
            "quote_quantity",
            "fee",
            "fee_asset",
            "executed_at",
        ]
        read_only_fields = fields

    def _is_buyer(self, trade: Trade) -> bool:
        return trade.buyer_id == self.context["account"].pk

    def _is_taker(self, trade: Trade) -> bool:
        return (trade.aggressor_side == Side.BUY) == self._is_buyer(trade)

    def get_order_id(self, trade: Trade) -> int:
        return trade.taker_order_id if self._is_taker(trade) else trade.maker_order_id

    def get_side(self, trade: Trade) -> str:
        return Side.BUY if self._is_buyer(trade) else Side.SELL

    def get_liquidity(self, trade: Trade) -> str:
        return "TAKER" if self._is_taker(trade) else "MAKER"

    def get_fee(self, trade: Trade) -> str:
        return str(trade.taker_fee if self._is_taker(trade) else trade.maker_fee)
