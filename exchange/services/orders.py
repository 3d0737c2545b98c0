"""Accepting orders and the requests that change them.

Each service validates the request, and in ONE durable transaction writes the order
(or finds it), moves the funds it needs into held, and appends the matcher's command.
A trigger on the command journal sends ``NOTIFY`` as the transaction commits, so the
matcher wakes the moment the command is visible. Everything after — matching, fills,
releases — is the matcher's.

Every refusal is an ``OrderRejected`` with a stable ``code`` and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from compliance.gates import placement_refusal
from dex.db import ModelRows, violated_constraint
from dex.logging import request_id_get
from dex.metrics import ORDERS_ACCEPTED, ORDERS_REJECTED
from exchange.engine import MarketUnits, UnitError
from exchange.models import (
    LIMIT_TYPES,
    LIVE_STATUSES,
    MARKET_TYPES,
    STOP_TYPES,
    Account,
    CommandKind,
    Market,
    Order,
    OrderArchive,
    OrderCommand,
    OrderStatus,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from exchange.selectors import order_by_client_id
from exchange.signing import (
    AmendFields,
    OrderFields,
    SignatureError,
    amend_digest,
    order_digest,
    recover_signer,
)
from portfolio.selectors import fee_rates_for
from portfolio.services.ledger import InsufficientFunds, hold_place


class OrderRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What the trader signed. Decimal prices and sizes, as on the wire."""

    client_order_id: str
    side: str
    type: str
    nonce: int
    signature: str
    order_hash: str
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    protection_price: Decimal | None = None
    time_in_force: str | None = None
    post_only: bool = False
    display_quantity: Decimal | None = None
    expires_at: datetime | None = None
    self_trade_prevention: str = SelfTradePrevention.EXPIRE_TAKER


def _reject(code: str, message: str) -> OrderRejected:
    return OrderRejected(code, message)


# Prices are NUMERIC(20,8) and amounts NUMERIC(30,8), and a buy's hold (its notional and
# fee reserve) is computed and rounded to 8 places in Decimal's 28 digits: beyond these
# an order could not be held, settled or stored exactly. No real market comes near them.
MAX_PRICE = Decimal(10) ** 11
MAX_AMOUNT = Decimal(10) ** 15


def _check_magnitude(request: OrderRequest) -> None:
    for name in ("price", "stop_price", "protection_price"):
        value = getattr(request, name)
        if value is not None and abs(value) >= MAX_PRICE:
            raise _reject("TOO_LARGE", f"{name} {value} is not below {MAX_PRICE:,}")
    for name in ("quantity", "display_quantity", "quote_quantity"):
        value = getattr(request, name)
        if value is not None and abs(value) >= MAX_AMOUNT:
            raise _reject("TOO_LARGE", f"{name} {value} is not below {MAX_AMOUNT:,}")
    reference = request.price or request.protection_price or request.stop_price
    value = None if reference is None or request.quantity is None else reference * request.quantity
    if value is not None and abs(value) >= MAX_AMOUNT:
        raise _reject("TOO_LARGE", f"the order's value {value} is not below {MAX_AMOUNT:,}")


def _check_grid(units: MarketUnits, request: OrderRequest) -> None:
    try:
        for name in ("price", "stop_price", "protection_price"):
            value = getattr(request, name)
            if value is not None:
                if value <= 0:
                    raise _reject("INVALID_PRICE", f"{name} must be positive, not {value}")
                units.price_to_ticks(value)
        for name in ("quantity", "display_quantity"):
            value = getattr(request, name)
            if value is not None:
                if value <= 0:
                    raise _reject("INVALID_QUANTITY", f"{name} must be positive, not {value}")
                units.qty_to_lots(value)
    except UnitError as exc:
        code = "PRICE_OFF_TICK" if "tick" in str(exc) else "QUANTITY_OFF_LOT"
        raise _reject(code, str(exc)) from None


def order_request_validate(*, market: Market, request: OrderRequest) -> str:
    """Check ``request`` against the order-type rules and the market's; return its time
    in force (defaulted: GTC for limit types, IOC for market types)."""
    if request.side not in Side.values:
        raise _reject("INVALID_SIDE", f"side must be BUY or SELL, not {request.side!r}")
    if request.type not in (*LIMIT_TYPES, *MARKET_TYPES):
        raise _reject("INVALID_ORDER_TYPE", f"unknown order type {request.type!r}")
    is_limit = request.type in LIMIT_TYPES
    tif = request.time_in_force or (TimeInForce.GTC if is_limit else TimeInForce.IOC)
    if tif not in TimeInForce.values:
        raise _reject("INVALID_TIME_IN_FORCE", f"unknown time in force {tif!r}")
    if request.self_trade_prevention not in SelfTradePrevention.values:
        raise _reject("INVALID_STP_MODE", f"unknown mode {request.self_trade_prevention!r}")

    if is_limit and request.price is None:
        raise _reject("MISSING_PRICE", f"a {request.type} order needs a price")
    if not is_limit and request.price is not None:
        raise _reject("MARKET_ORDER_WITH_PRICE", f"a {request.type} order takes no price")
    if request.type in STOP_TYPES and request.stop_price is None:
        raise _reject("MISSING_STOP_PRICE", f"a {request.type} order needs a stop price")
    if request.type not in STOP_TYPES and request.stop_price is not None:
        raise _reject("STOP_PRICE_NOT_ALLOWED", f"a {request.type} order takes no stop price")
    # The engine takes market-type orders as IOC only: take what the book has, never rest.
    if not is_limit and tif != TimeInForce.IOC:
        raise _reject("INVALID_TIME_IN_FORCE", f"a {request.type} order is IOC, not {tif}")
    if (tif == TimeInForce.GTT) != (request.expires_at is not None):
        raise _reject(
            "MISSING_EXPIRE_TIME" if tif == TimeInForce.GTT else "EXPIRE_TIME_NOT_ALLOWED",
            "an expiry goes with GTT, and only with GTT",
        )
    if request.expires_at is not None and request.expires_at <= timezone.now():
        raise _reject("ALREADY_EXPIRED", f"expiry {request.expires_at.isoformat()} has passed")
    # Only a plain limit order may be post-only: a stop or take-profit limit enters the
    # book when it fires, and the engine does not take post-only for those.
    if request.post_only and not (
        request.type == OrderType.LIMIT and tif in (TimeInForce.GTC, TimeInForce.GTT)
    ):
        raise _reject("POST_ONLY_NOT_ALLOWED", "post-only orders must be GTC or GTT LIMIT orders")
    _check_magnitude(request)

    if request.quote_quantity is not None:
        if request.type != "MARKET" or request.side != Side.BUY or request.quantity is not None:
            raise _reject(
                "QUOTE_AMOUNT_NOT_ALLOWED",
                "only a market buy may be sized by quote amount, instead of quantity",
            )
        if request.quote_quantity <= 0 or request.quote_quantity != request.quote_quantity.quantize(
            Decimal("0.00000001")
        ):
            raise _reject("INVALID_QUOTE_AMOUNT", "the quote amount must be positive, 8 places")
        if request.quote_quantity < market.min_notional:
            raise _reject(
                "BELOW_MIN_NOTIONAL",
                f"{request.quote_quantity} is below the minimum {market.min_notional}",
            )
    elif request.quantity is None:
        raise _reject("INVALID_QUANTITY", "an order needs a quantity")

    market_buy = not is_limit and request.side == Side.BUY and request.quantity is not None
    if market_buy and request.protection_price is None:
        raise _reject(
            "PROTECTION_PRICE_REQUIRED", "a market buy by quantity names the worst price it accepts"
        )
    if not market_buy and request.protection_price is not None:
        raise _reject("PROTECTION_PRICE_NOT_ALLOWED", "only market buys by quantity take one")

    _check_grid(MarketUnits(market.tick_size, market.lot_size), request)
    if request.quantity is not None:
        if request.quantity < market.min_quantity:
            raise _reject(
                "BELOW_MIN_QUANTITY",
                f"{request.quantity} is below the minimum {market.min_quantity}",
            )
        reference = request.price or request.protection_price or request.stop_price
        if reference is not None and reference * request.quantity < market.min_notional:
            raise _reject(
                "BELOW_MIN_NOTIONAL",
                f"{reference * request.quantity} is below the minimum {market.min_notional}",
            )
    if request.display_quantity is not None and not (
        is_limit
        and tif in (TimeInForce.GTC, TimeInForce.GTT)
        and request.display_quantity <= request.quantity
    ):
        raise _reject(
            "INVALID_DISPLAY_QUANTITY", "an iceberg is a GTC/GTT limit showing at most its quantity"
        )
    return tif


def _notional(request: OrderRequest) -> Decimal | None:
    """What the order may trade, in quote: None where no price bounds it (market sells,
    which the placement gates value at the market's last price)."""
    if request.quote_quantity is not None:
        return request.quote_quantity
    reference = request.price or request.protection_price
    return reference * request.quantity if reference is not None else None


def _tradable(account: Account, market: Market, request: OrderRequest) -> None:
    refusal = placement_refusal(
        account=account, market=market, notional=_notional(request), quantity=request.quantity
    )
    if refusal is not None:
        raise _reject(refusal.code, refusal.message)


@dataclass(frozen=True, slots=True)
class Placed:
    order: Order
    created: bool  # False: an earlier order with the same client_order_id


def order_place(*, account: Account, market: Market, request: OrderRequest) -> Order:
    """Accept an order: validated, its worst-case cost held, the order and its PLACE
    command written together. The same ``client_order_id`` again returns the original
    order and does nothing else."""
    return _order_place(account=account, market=market, request=request).order


def _order_place(*, account: Account, market: Market, request: OrderRequest) -> Placed:
    try:
        placed = _order_placed(account=account, market=market, request=request)
    except OrderRejected as exc:
        ORDERS_REJECTED.labels(market.symbol, exc.code).inc()
        raise
    if placed.created:
        ORDERS_ACCEPTED.labels(market.symbol).inc()
    return placed


def _archived_original(account: Account, request: OrderRequest) -> Placed | None:
    """A retry of an order finished long ago and archived is answered with it, as a
    retry of a live one is, whatever today's checks would say of it."""
    archived = OrderArchive.objects.filter(
        account_id=account.pk, client_order_id=request.client_order_id
    ).first()
    return None if archived is None else Placed(archived.as_order(), created=False)


def _order_placed(*, account: Account, market: Market, request: OrderRequest) -> Placed:
    try:
        return _order_write(account=account, market=market, request=request)
    except OrderRejected:
        if (original := _archived_original(account, request)) is not None:
            return original
        raise
    except IntegrityError as exc:
        # Nothing was written. A concurrent retry of the same order may have won the
        # race: return what it wrote. Otherwise say which rule the order broke.
        existing = Order.objects.filter(account=account, client_order_id=request.client_order_id)
        if (order := existing.first()) is not None:
            return Placed(order, created=False)
        if (original := _archived_original(account, request)) is not None:
            return original
        if violated_constraint(exc) == "order_unique_nonce":
            raise _reject("NONCE_REUSED", f"nonce {request.nonce} was used already") from None
        raise _reject("DUPLICATE", f"order conflicts with an existing one: {exc}") from None


_ORDER = ModelRows(Order, "o")
_COMMAND = ModelRows(OrderCommand, "c")


@transaction.atomic(durable=True)
def _order_write(*, account: Account, market: Market, request: OrderRequest) -> Placed:
    order = order_by_client_id(account_id=account.pk, client_order_id=request.client_order_id)
    if order is not None:
        return Placed(order, created=False)
    tif = order_request_validate(market=market, request=request)
    _tradable(account, market, request)
    rates = fee_rates_for(account=account, market=market)
    # A reused nonce or order hash breaks a unique constraint here: the transaction
    # rolls back and ``_order_place`` names the refusal.
    order = _ORDER.insert(
        Order(
            account=account,
            market=market,
            client_order_id=request.client_order_id,
            side=request.side,
            type=request.type,
            time_in_force=tif,
            post_only=request.post_only,
            self_trade_prevention=request.self_trade_prevention,
            price=request.price,
            stop_price=request.stop_price,
            protection_price=request.protection_price,
            quantity=request.quantity,
            remaining=request.quantity,
            quote_quantity=request.quote_quantity,
            display_quantity=request.display_quantity,
            maker_fee_rate=rates.maker,
            taker_fee_rate=rates.taker,
            nonce=request.nonce,
            signature=request.signature,
            order_hash=request.order_hash,
            expires_at=request.expires_at if tif == TimeInForce.GTT else None,
        ),
        connection,
    )
    try:
        hold_place(order=order, fresh=True)
    except InsufficientFunds as exc:
        raise _reject("INSUFFICIENT_FUNDS", str(exc)) from None
    _COMMAND.insert(
        OrderCommand(
            market=market,
            kind=CommandKind.PLACE,
            account=account,
            order=order,
            request_id=request_id_get(),
        ),
        connection,
    )
    return Placed(order, created=True)


def order_fields(*, account: Account, market: Market, request: OrderRequest) -> OrderFields:
    """The EIP-712 fields of ``request``, with its time in force defaulted as the order
    service defaults it (GTC for limit types, IOC for market types)."""
    tif = request.time_in_force or (
        TimeInForce.GTC if request.type in LIMIT_TYPES else TimeInForce.IOC
    )
    return OrderFields(
        account=account.wallet_address,
        market=market.symbol,
        client_order_id=request.client_order_id,
        side=request.side,
        order_type=request.type,
        time_in_force=tif,
        nonce=request.nonce,
        price=request.price,
        stop_price=request.stop_price,
        quantity=request.quantity,
        quote_quantity=request.quote_quantity,
        protection_price=request.protection_price,
        display_quantity=request.display_quantity,
        post_only=request.post_only,
        self_trade_prevention=request.self_trade_prevention,
        expires_at=request.expires_at,
    )


def order_signature_verify(*, account: Account, market: Market, request: OrderRequest) -> str:
    """Check that ``account``'s wallet signed exactly ``request``; return the order hash
    (the EIP-712 digest the wallet signed). A changed field, a signature by another wallet
    or a hash that is not the order's is an ``OrderRejected``."""
    try:
        digest = order_digest(order_fields(account=account, market=market, request=request))
    except ValueError as exc:  # an amount finer than 1e-8: it cannot have been signed
        raise _reject("INVALID_AMOUNT", str(exc)) from None
    order_hash = "0x" + digest.hex()
    if request.order_hash and request.order_hash.lower() != order_hash:
        raise _reject(
            "ORDER_HASH_MISMATCH",
            f"the order's EIP-712 hash is {order_hash}, not {request.order_hash}",
        )
    try:
        signer = recover_signer(digest, request.signature)
    except SignatureError as exc:
        raise _reject("INVALID_SIGNATURE", str(exc)) from None
    if signer != account.wallet_address:
        raise _reject(
            "SIGNATURE_MISMATCH",
            "the signature is not this account's wallet over these order fields",
        )
    return order_hash


def order_place_signed(*, account: Account, market: Market, request: OrderRequest) -> Placed:
    """The trader-facing way in: ``order_place`` for a request whose EIP-712 signature
    by the account's wallet is verified first. Its hash is the one computed here."""
    try:
        order_hash = order_signature_verify(account=account, market=market, request=request)
    except OrderRejected as exc:
        ORDERS_REJECTED.labels(market.symbol, exc.code).inc()
        raise
    return _order_place(
        account=account, market=market, request=replace(request, order_hash=order_hash)
    )


def _live_order(account: Account, order: Order) -> Order:
    locked = Order.objects.select_for_update(of=("self",)).filter(pk=order.pk).first()
    if locked is None:  # finished long ago and moved to the archive
        if order.account_id != account.pk:
            raise _reject("UNKNOWN_ORDER", "no such order")
        raise _reject("ORDER_CLOSED", f"order is {order.status} and archived")
    if locked.account_id != account.pk:
        raise _reject("UNKNOWN_ORDER", "no such order")  # never reveal others' orders
    if locked.is_terminal:
        raise _reject("ORDER_CLOSED", f"order is {locked.status}")
    return locked


@transaction.atomic(durable=True)
def order_cancel(*, account: Account, order: Order) -> OrderCommand:
    """Ask the matcher to cancel ``order``; its hold is released when it does."""
    locked = _live_order(account, order)
    return OrderCommand.objects.create(
        market_id=locked.market_id,
        kind=CommandKind.CANCEL,
        account=account,
        order=locked,
        request_id=request_id_get(),
    )


def order_amend_signed(
    *,
    account: Account,
    order: Order,
    nonce: int,
    signature: str,
    price: Decimal | None = None,
    quantity: Decimal | None = None,
) -> OrderCommand:
    """The trader-facing way in: ``order_amend`` for a change ``account``'s wallet signed
    (an EIP-712 ``Amend`` over the order's hash, the new price and quantity and a nonce
    the account has not used for an amend before). A signature by another wallet, over
    other values or another order, is refused; so is a nonce used before."""
    try:
        digest = amend_digest(
            AmendFields(
                account=account.wallet_address,
                order_hash=order.order_hash,
                nonce=nonce,
                price=price,
                quantity=quantity,
            )
        )
    except ValueError as exc:  # an amount finer than 1e-8: it cannot have been signed
        raise _reject("INVALID_AMOUNT", str(exc)) from None
    try:
        signer = recover_signer(digest, signature)
    except SignatureError as exc:
        raise _reject("INVALID_SIGNATURE", str(exc)) from None
    if signer != account.wallet_address:
        raise _reject(
            "SIGNATURE_MISMATCH", "the signature is not this account's wallet over this amend"
        )
    try:
        return order_amend(
            account=account,
            order=order,
            price=price,
            quantity=quantity,
            signed={"nonce": str(nonce), "signature": signature.lower()},
        )
    except IntegrityError as exc:
        if violated_constraint(exc) == "ordercommand_unique_amend_nonce":
            raise _reject("NONCE_REUSED", f"amend nonce {nonce} was used already") from None
        raise


@transaction.atomic(durable=True)
def order_amend(
    *,
    account: Account,
    order: Order,
    price: Decimal | None = None,
    quantity: Decimal | None = None,
    signed: dict[str, str] | None = None,
) -> OrderCommand:
    """Ask the matcher to change a resting limit order's price or quantity. The amended
    order must pass every check a new one would (the market's rules, an iceberg showing
    no more than its quantity, the account's limits and the market's state); the matcher
    decides the rest, and if the change needs more funds, they are held when it applies
    it. ``signed``: the nonce and signature of a trader's signed amend, journalled with
    it (see ``order_amend_signed``, the way traders amend)."""
    locked = _live_order(account, order)
    # Only an order on the book: the engine refuses an amend of a stop that has not
    # fired (cancel it and place another), and one not yet accepted is not there yet.
    if locked.type not in LIMIT_TYPES or locked.status in (
        OrderStatus.PENDING,
        OrderStatus.UNTRIGGERED,
    ):
        raise _reject(
            "NOT_AMENDABLE",
            f"only a limit order resting on the book can be amended (this one is {locked.status})",
        )
    if price is None and quantity is None:
        raise _reject("NOTHING_TO_AMEND", "give a new price or quantity")
    market = locked.market
    amended = OrderRequest(
        client_order_id=locked.client_order_id,
        side=locked.side,
        type=locked.type,
        nonce=0,
        signature="",
        order_hash="",
        price=locked.price if price is None else price,
        quantity=locked.quantity if quantity is None else quantity,
        stop_price=locked.stop_price,
        time_in_force=locked.time_in_force,
        post_only=locked.post_only,
        display_quantity=locked.display_quantity,
        expires_at=locked.expires_at,
        self_trade_prevention=locked.self_trade_prevention,
    )
    order_request_validate(market=market, request=amended)
    _tradable(account, market, amended)
    if quantity is not None and quantity <= locked.filled:
        raise _reject("INVALID_QUANTITY", f"{quantity} is not above what is filled already")
    payload = dict(signed or {})
    if price is not None:
        payload["price"] = str(price)
    if quantity is not None:
        payload["quantity"] = str(quantity)
    return OrderCommand.objects.create(
        market=market,
        kind=CommandKind.AMEND,
        account=account,
        order=locked,
        payload=payload,
        request_id=request_id_get(),
    )


@transaction.atomic(durable=True)
def order_cancel_all_markets(*, account: Account) -> list[Market]:
    """Cancel every open order of ``account`` in every market it has one in; return
    those markets."""
    open_in = Order.objects.filter(
        account=account, status__in=[OrderStatus.PENDING, *LIVE_STATUSES]
    ).values("market")
    markets = list(Market.objects.filter(pk__in=open_in).order_by("pk"))
    for market in markets:
        order_cancel_all(account=account, market=market)
    return markets


def order_cancel_all(*, account: Account | None, market: Market) -> OrderCommand:
    """Cancel every open order of ``account`` in ``market`` (all accounts' when
    ``account`` is None: a staff action)."""
    return OrderCommand.objects.create(
        market=market, kind=CommandKind.CANCEL_ALL, account=account, request_id=request_id_get()
    )
