"""Orders and fills: place (single and batch), look up, amend, cancel, list.

Views parse, call a service and render. Placement waits up to
``ORDER_REPLY_TIMEOUT`` seconds for the matcher's reply and returns the order as the
matcher left it, or still PENDING when the reply did not come in time (it will: the
command is journalled). Everything a trader reads is their own: other traders' orders
do not exist for them (404, never 403).
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response

from dex.api.errors import ApiError
from dex.api.permissions import CanTrade
from dex.api.scoping import for_account
from dex.api.views import TraderHistoryView, TraderView
from exchange.api.serializers import (
    BATCH_MAX_ORDERS,
    CancelAllSerializer,
    FillListQuerySerializer,
    FillSerializer,
    OrderAmendSerializer,
    OrderBatchResultSerializer,
    OrderBatchSerializer,
    OrderListQuerySerializer,
    OrderPlaceSerializer,
    OrderSerializer,
    order_request_from,
)
from exchange.matcher.replies import order_reply_wait
from exchange.models import (
    LIVE_STATUSES,
    Account,
    Market,
    Order,
    OrderArchive,
    OrderStatus,
    Trade,
)
from exchange.selectors import market_get, order_reload
from exchange.services.orders import (
    OrderRejected,
    order_amend_signed,
    order_cancel,
    order_cancel_all,
    order_cancel_all_markets,
    order_place_signed,
)

log = logging.getLogger(__name__)

# Refusals that are about the state of things rather than the request's shape.
_CONFLICT_CODES = {"NONCE_REUSED", "DUPLICATE", "ORDER_CLOSED", "NOT_AMENDABLE"}
_FORBIDDEN_CODES = {
    "ACCOUNT_FROZEN",
    "ACCOUNT_NOT_ACTIVE",
    "KYC_REQUIRED",
    "KYC_LIMIT_EXCEEDED",
    "JURISDICTION_RESTRICTED",
}


def rejection(exc: OrderRejected) -> ApiError:
    if exc.code in _CONFLICT_CODES:
        code = status.HTTP_409_CONFLICT
    elif exc.code in _FORBIDDEN_CODES:
        code = status.HTTP_403_FORBIDDEN
    elif exc.code in {"SIGNATURE_MISMATCH", "INVALID_SIGNATURE", "ORDER_HASH_MISMATCH"}:
        code = status.HTTP_401_UNAUTHORIZED
    elif exc.code == "UNKNOWN_ORDER":
        code = status.HTTP_404_NOT_FOUND
    else:
        code = status.HTTP_400_BAD_REQUEST if exc.code != "INSUFFICIENT_FUNDS" else 422
    return ApiError(exc.code, str(exc), status=code)


def _market(symbol: str) -> Market:
    market = market_get(symbol=symbol)
    if market is None:
        raise ApiError("UNKNOWN_MARKET", f"no market {symbol!r}", status=404)
    return market


def _orders(view: TraderView):
    return for_account(Order.objects.select_related("market"), view.trader.account)


def _place(account: Account, data: dict) -> tuple[Order, bool]:
    market = _market(data["market"])
    request = order_request_from(data)
    try:
        placed = order_place_signed(account=account, market=market, request=request)
    except OrderRejected as exc:
        raise rejection(exc) from None
    if placed.order.market_id != market.pk:
        raise ApiError(
            "DUPLICATE",
            f"client_order_id {request.client_order_id!r} names an order in another market",
            status=409,
        )
    return placed.order, placed.created


def _release_connection() -> None:
    """Give the database connection back to the pool while waiting on Redis, so a
    waiting request does not hold one of the pool's few connections."""
    if settings.DB_POOL_MAX_SIZE and not connection.in_atomic_block:
        connection.close()


def _await(order: Order, deadline: float) -> Order:
    """``order`` after the matcher's reply, or as it is if none comes by ``deadline``."""
    _release_connection()
    reply = order_reply_wait(order_id=order.pk, timeout=deadline - time.monotonic())
    return order_reload(order) if reply is not None else order


def _deadline() -> float:
    return time.monotonic() + settings.ORDER_REPLY_TIMEOUT


class OrderListView(TraderHistoryView):
    serializer_class = OrderSerializer
    permission_classes = [CanTrade]
    rate_limit_scope = "orders"

    @extend_schema(
        operation_id="orders_list",
        parameters=[OrderListQuerySerializer],
        responses=OrderSerializer(many=True),
        summary="Order history, newest first (cursor pagination)",
    )
    def get(self, request):
        params = self.query_params(OrderListQuerySerializer)
        orders = _orders(self)
        if "market" in params:
            orders = orders.filter(market__symbol=params["market"])
        if params.get("status"):
            orders = orders.filter(status__in=params["status"])
        if "side" in params:
            orders = orders.filter(side=params["side"])
        if "since" in params:
            orders = orders.filter(created_at__gte=params["since"])
        if "until" in params:
            orders = orders.filter(created_at__lt=params["until"])
        return self.paginated(orders)

    @extend_schema(
        operation_id="orders_place",
        request=OrderPlaceSerializer,
        responses={
            201: OpenApiResponse(OrderSerializer, "Accepted; its state after matching"),
            200: OpenApiResponse(OrderSerializer, "The same client_order_id: the original"),
        },
        summary="Place a signed order",
    )
    def post(self, request):
        serializer = OrderPlaceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        order, created = _place(self.trader.account, serializer.validated_data)
        if created:
            order = _await(order, _deadline())
        return Response(
            OrderSerializer(order).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class OrderBatchView(TraderView):
    permission_classes = [CanTrade]
    rate_limit_scope = "orders"

    @staticmethod
    def rate_limit_cost(request) -> int:
        """Each order of a batch counts against the order limits, as if sent alone (a
        malformed batch, refused whole, counts one)."""
        orders = request.data.get("orders") if isinstance(request.data, dict) else None
        return min(len(orders), BATCH_MAX_ORDERS) if isinstance(orders, list) and orders else 1

    @extend_schema(
        operation_id="orders_place_batch",
        request=OrderBatchSerializer,
        responses=OrderBatchResultSerializer,
        summary="Place up to 20 signed orders; each is accepted or refused on its own",
    )
    def post(self, request):
        batch = OrderBatchSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        placed: list[Order | ApiError] = []
        for data in batch.validated_data["orders"]:
            try:
                placed.append(_place(self.trader.account, data)[0])
            except ApiError as exc:
                placed.append(exc)
            except Exception:
                # Each order is its own transaction: those before it stand, and the
                # answer must say so, order by order, rather than fail the whole batch.
                log.exception("batch order %s failed", data.get("client_order_id"))
                placed.append(
                    ApiError("INTERNAL_ERROR", "this order could not be placed", status=500)
                )
        deadline = _deadline()
        results = []
        for item in placed:
            if isinstance(item, ApiError):
                results.append({"ok": False, "code": item.code, "message": item.message})
                continue
            order = _await(item, deadline) if item.status == OrderStatus.PENDING else item
            results.append({"ok": True, "order": OrderSerializer(order).data})
        return Response({"results": results})


class OpenOrderListView(TraderHistoryView):
    serializer_class = OrderSerializer

    @extend_schema(
        operation_id="orders_open",
        parameters=[OrderListQuerySerializer(partial=True)],
        responses=OrderSerializer(many=True),
        summary="Open orders (pending, resting, untriggered)",
    )
    def get(self, request):
        params = self.query_params(OrderListQuerySerializer)
        orders = _orders(self).filter(status__in=[OrderStatus.PENDING, *LIVE_STATUSES])
        if "market" in params:
            orders = orders.filter(market__symbol=params["market"])
        if "side" in params:
            orders = orders.filter(side=params["side"])
        return self.paginated(orders)


class _OrderLookup(TraderView):
    """One of the caller's orders, found by ``lookup`` in the URL."""

    serializer_class = OrderSerializer
    permission_classes = [CanTrade]
    rate_limit_scope = "orders"
    lookup: str

    def get_object(self) -> Order:
        """The order, or one that finished long ago and moved to the archive (read
        only: the services refuse to change it, as ORDER_CLOSED)."""
        value = self.kwargs[self.lookup]
        order = _orders(self).filter(**{self.lookup: value}).first()
        if order is None:
            lookup = "order_id" if self.lookup == "pk" else self.lookup
            account = self.trader.account
            copy = for_account(OrderArchive.objects, account).filter(**{lookup: value}).first()
            order = copy.as_order() if copy is not None else None
        if order is None:
            raise ApiError("UNKNOWN_ORDER", "no such order", status=404)
        return order


class _OneOrderView(_OrderLookup):
    """Read or cancel one order."""

    def get(self, request, **kwargs):
        return Response(OrderSerializer(self.get_object()).data)

    def delete(self, request, **kwargs):
        order = self.get_object()
        try:
            order_cancel(account=self.trader.account, order=order)
        except OrderRejected as exc:
            raise rejection(exc) from None
        _release_connection()
        reply = order_reply_wait(
            order_id=order.pk, timeout=settings.ORDER_REPLY_TIMEOUT, terminal=True
        )
        order = order_reload(order)
        done = reply is not None or order.is_terminal
        return Response(
            OrderSerializer(order).data,
            status=status.HTTP_200_OK if done else status.HTTP_202_ACCEPTED,
        )


_CANCEL_RESPONSES = {
    200: OpenApiResponse(OrderSerializer, "Cancelled (or already closed by a fill)"),
    202: OpenApiResponse(OrderSerializer, "Cancel requested; the matcher has not answered yet"),
}


@extend_schema(summary="An order by id")
class OrderView(_OneOrderView):
    lookup = "pk"

    @extend_schema(operation_id="orders_get")
    def get(self, request, **kwargs):
        return super().get(request, **kwargs)

    @extend_schema(operation_id="orders_cancel", request=None, responses=_CANCEL_RESPONSES)
    def delete(self, request, **kwargs):
        return super().delete(request, **kwargs)


class OrderByClientIdView(_OneOrderView):
    lookup = "client_order_id"

    @extend_schema(operation_id="orders_get_by_client_id", summary="An order by client id")
    def get(self, request, **kwargs):
        return super().get(request, **kwargs)

    @extend_schema(
        operation_id="orders_cancel_by_client_id", request=None, responses=_CANCEL_RESPONSES
    )
    def delete(self, request, **kwargs):
        return super().delete(request, **kwargs)


class OrderAmendView(_OrderLookup):
    lookup = "pk"

    @extend_schema(
        operation_id="orders_amend",
        request=OrderAmendSerializer,
        responses={202: OrderSerializer},
        summary="Change a resting limit order's price or quantity (a signed amend)",
    )
    def post(self, request, **kwargs):
        serializer = OrderAmendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        order = self.get_object()
        try:
            order_amend_signed(
                account=self.trader.account, order=order, **serializer.validated_data
            )
        except OrderRejected as exc:
            raise rejection(exc) from None
        return Response(OrderSerializer(order).data, status=status.HTTP_202_ACCEPTED)


class CancelAllView(TraderView):
    permission_classes = [CanTrade]
    rate_limit_scope = "orders"

    @extend_schema(
        operation_id="orders_cancel_all",
        request=CancelAllSerializer,
        responses={202: CancelAllSerializer(many=True)},
        summary="Cancel every open order, in one market or in all",
    )
    def post(self, request):
        serializer = CancelAllSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = self.trader.account
        if "market" in serializer.validated_data:
            markets = [_market(serializer.validated_data["market"])]
            order_cancel_all(account=account, market=markets[0])
        else:
            markets = order_cancel_all_markets(account=account)
        return Response([{"market": m.symbol} for m in markets], status=status.HTTP_202_ACCEPTED)


class FillListView(TraderHistoryView):
    serializer_class = FillSerializer

    @extend_schema(
        operation_id="fills_list",
        parameters=[FillListQuerySerializer],
        responses=FillSerializer(many=True),
        summary="Your fills, newest first (cursor pagination)",
    )
    def get(self, request):
        params = self.query_params(FillListQuerySerializer)
        trades = for_account(Trade.objects.select_related("market__quote"), self.trader.account)
        if "market" in params:
            trades = trades.filter(market__symbol=params["market"])
        if "order_id" in params:
            trades = trades.filter(
                Q(maker_order_id=params["order_id"]) | Q(taker_order_id=params["order_id"])
            )
        if "since" in params:
            trades = trades.filter(executed_at__gte=params["since"])
        if "until" in params:
            trades = trades.filter(executed_at__lt=params["until"])
        return self.paginated(trades, account=self.trader.account)


urlpatterns = [
    path("orders/", OrderListView.as_view(), name="orders"),
    path("orders/batch/", OrderBatchView.as_view(), name="orders-batch"),
    path("orders/open/", OpenOrderListView.as_view(), name="orders-open"),
    path("orders/cancel-all/", CancelAllView.as_view(), name="orders-cancel-all"),
    path("orders/<int:pk>/", OrderView.as_view(), name="order"),
    path("orders/<int:pk>/amend/", OrderAmendView.as_view(), name="order-amend"),
    path(
        "orders/by-client-id/<str:client_order_id>/",
        OrderByClientIdView.as_view(),
        name="order-by-client-id",
    ),
    path("fills/", FillListView.as_view(), name="fills"),
]
