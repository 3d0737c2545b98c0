"""The order a caller submits, which the book then keeps as its resting record."""

from collections.abc import Hashable

from exchange.engine.types import OrderType, SelfTradePrevention, Side, TimeInForce


class Order:
    """One order command, in integer ticks and lots.

    ``OrderBook.submit`` takes ownership: the same object becomes the book's resting record
    (this saves an allocation per order on the hot path), so do not reuse or mutate it after
    submitting.  ``remaining`` and ``visible`` are maintained by the book and are readable;
    ``sequence`` is the time-priority stamp the book assigns (``restore`` honours a preset one)
    and ``triggered`` turns True when a stop fires (set it when restoring a fired stop-limit).

    ``quantity`` is in lots; a market BUY may instead carry ``quote_amount`` in quote units
    (ticks x lots).  ``time_in_force`` None means GTC for limit types and IOC for market types.
    ``expire_at`` is only for GTT and is in whatever clock units the caller passes to
    ``OrderBook.expire``.  ``display_quantity`` makes an iceberg.
    """

    __slots__ = (
        "_level",
        "_next",
        "_prev",
        "account",
        "display_quantity",
        "expire_at",
        "order_id",
        "order_type",
        "post_only",
        "price",
        "quantity",
        "quote_amount",
        "remaining",
        "sequence",
        "side",
        "stop_price",
        "stp",
        "time_in_force",
        "triggered",
        "visible",
    )

    def __init__(
        self,
        order_id: int,
        account: Hashable,
        side: Side,
        price: int | None = None,
        quantity: int | None = None,
        order_type: OrderType = OrderType.LIMIT,
        time_in_force: TimeInForce | None = None,
        *,
        post_only: bool = False,
        display_quantity: int | None = None,
        stop_price: int | None = None,
        expire_at: int | None = None,
        stp: SelfTradePrevention = SelfTradePrevention.EXPIRE_TAKER,
        quote_amount: int | None = None,
        sequence: int | None = None,
        triggered: bool = False,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price = price
        self.quantity = quantity
        self.order_type = order_type
        self.time_in_force = time_in_force
        self.post_only = post_only
        self.display_quantity = display_quantity
        self.stop_price = stop_price
        self.expire_at = expire_at
        self.stp = stp
        self.quote_amount = quote_amount
        self.sequence = sequence
        self.triggered = triggered

    def __repr__(self) -> str:
        fields = [
            f"order_id={self.order_id!r}",
            f"account={self.account!r}",
            f"side={self.side!s}",
            f"type={self.order_type!s}",
        ]
        for name in (
            "price",
            "quantity",
            "quote_amount",
            "time_in_force",
            "stop_price",
            "display_quantity",
            "expire_at",
        ):
            value = getattr(self, name)
            if value is not None:
                fields.append(f"{name}={value!s}")
        if self.post_only:
            fields.append("post_only=True")
        if self.stp is not SelfTradePrevention.EXPIRE_TAKER:
            fields.append(f"stp={self.stp!s}")
        return f"Order({', '.join(fields)})"
