"""Small builders for readable scenario tables: orders in, trades and book out."""

from exchange.engine import (
    Cancelled,
    Expired,
    Order,
    OrderBook,
    OrderType,
    Rejected,
    Rested,
    Side,
    TimeInForce,
    Trade,
    Triggered,
)


def buy(order_id: int, account: object, price: int | None, quantity: int | None, **kw) -> Order:
    return Order(order_id, account, Side.BUY, price, quantity, **kw)


def sell(order_id: int, account: object, price: int | None, quantity: int | None, **kw) -> Order:
    return Order(order_id, account, Side.SELL, price, quantity, **kw)


def market_buy(order_id: int, account: object, quantity: int | None = None, **kw) -> Order:
    return Order(order_id, account, Side.BUY, None, quantity, OrderType.MARKET, **kw)


def market_sell(order_id: int, account: object, quantity: int, **kw) -> Order:
    return Order(order_id, account, Side.SELL, None, quantity, OrderType.MARKET, **kw)


def ioc(order: Order) -> Order:
    order.time_in_force = TimeInForce.IOC
    return order


def fok(order: Order) -> Order:
    order.time_in_force = TimeInForce.FOK
    return order


def book_with(*orders: Order, **book_options) -> OrderBook:
    """A book holding ``orders`` submitted in turn; they must not be rejected."""
    book = OrderBook(**book_options)
    for order in orders:
        events = book.submit(order)
        assert not isinstance(events[0], Rejected), events
    return book


def trades(events: list) -> list[tuple[int, int, int, int]]:
    """(maker, taker, price, quantity) of each trade, in order."""
    return [
        (e.maker_order_id, e.taker_order_id, e.price, e.quantity)
        for e in events
        if isinstance(e, Trade)
    ]


def outcomes(events: list) -> list[tuple]:
    """What happened to orders, other than fills: the short story of a command."""
    story = []
    for e in events:
        if isinstance(e, Rested):
            story.append(("rested", e.order_id, e.remaining))
        elif isinstance(e, Cancelled):
            story.append(("cancelled", e.order_id, e.remaining, e.reason.value))
        elif isinstance(e, Rejected):
            story.append(("rejected", e.order_id, e.reason.value))
        elif isinstance(e, Expired):
            story.append(("expired", e.order_id, e.remaining))
        elif isinstance(e, Triggered):
            story.append(("triggered", e.order_id))
    return story
