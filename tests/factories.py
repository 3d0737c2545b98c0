"""factory-boy factories that build valid rows, so each test states only what matters."""

import itertools
import secrets
from decimal import Decimal

import factory

from exchange.models import (
    Account,
    Asset,
    Market,
    MarketStatus,
    Order,
    OrderCommand,
    OrderType,
    Side,
    TimeInForce,
)
from exchange.services.orders import OrderRequest, order_place


def random_hex(nbytes: int) -> str:
    return "0x" + secrets.token_hex(nbytes)


class AssetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Asset

    symbol = factory.Sequence(lambda n: f"TK{n}")
    name = factory.LazyAttribute(lambda o: f"Token {o.symbol}")
    decimals = 18


class MarketFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Market

    base = factory.SubFactory(AssetFactory)
    quote = factory.SubFactory(AssetFactory)
    symbol = factory.LazyAttribute(lambda o: f"{o.base.symbol}-{o.quote.symbol}")
    tick_size = Decimal("0.01")
    lot_size = Decimal("0.001")
    min_quantity = Decimal("0.001")
    min_notional = Decimal("1")
    maker_fee_rate = Decimal("0.0002")
    taker_fee_rate = Decimal("0.0005")
    status = MarketStatus.OPEN


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Account

    wallet_address = factory.LazyFunction(lambda: random_hex(20))
    country = "GB"
    kyc_tier = 1


class OrderFactory(factory.django.DjangoModelFactory):
    """A PENDING GTC limit buy of 1 at 100."""

    class Meta:
        model = Order

    account = factory.SubFactory(AccountFactory)
    market = factory.SubFactory(MarketFactory)
    client_order_id = factory.Sequence(lambda n: f"client-{n}")
    side = Side.BUY
    type = OrderType.LIMIT
    time_in_force = TimeInForce.GTC
    price = Decimal("100.00")
    quantity = Decimal("1.000")
    remaining = factory.LazyAttribute(lambda o: o.quantity)
    nonce = factory.Sequence(lambda n: n + 1)
    signature = factory.LazyFunction(lambda: random_hex(65))
    order_hash = factory.LazyFunction(lambda: random_hex(32))


class OrderCommandFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OrderCommand

    order = factory.SubFactory(OrderFactory)
    market = factory.LazyAttribute(lambda o: o.order.market)
    account = factory.LazyAttribute(lambda o: o.order.account)
    kind = "PLACE"


_nonces = itertools.count(1)


def order_request(**fields) -> OrderRequest:
    """What a trader signs: a GTC limit buy of 2 at 100 unless told otherwise."""
    defaults = {
        "client_order_id": random_hex(6)[2:],
        "side": "BUY",
        "type": "LIMIT",
        "price": Decimal("100"),
        "quantity": Decimal("2"),
        "nonce": next(_nonces),
        "signature": random_hex(65),
        "order_hash": random_hex(32),
    }
    return OrderRequest(**(defaults | fields))


def place_order(account, market, side, quantity=None, price=None, **fields) -> Order:
    """Place an order through the order service, as a trader's request would."""
    return order_place(
        account=account,
        market=market,
        request=order_request(
            side=side,
            price=Decimal(price) if price is not None else None,
            quantity=Decimal(quantity) if quantity is not None else None,
            **fields,
        ),
    )
