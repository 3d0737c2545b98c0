"""Reference data: assets and markets."""

from decimal import Decimal

from django.db import transaction

from exchange.models import Asset, CommandKind, Market, MarketStatus, OrderCommand


@transaction.atomic
def asset_create(
    *, symbol: str, name: str, decimals: int, contract_address: str | None = None
) -> Asset:
    return Asset.objects.create(
        symbol=symbol,
        name=name,
        decimals=decimals,
        contract_address=contract_address.lower() if contract_address else None,
    )


@transaction.atomic
def market_create(
    *,
    base: Asset,
    quote: Asset,
    tick_size: Decimal,
    lot_size: Decimal,
    min_quantity: Decimal,
    min_notional: Decimal,
    maker_fee_rate: Decimal,
    taker_fee_rate: Decimal,
    price_band: Decimal = Decimal("0.05"),
) -> Market:
    """Create a market in PRE_OPEN; it trades once opened."""
    return Market.objects.create(
        symbol=f"{base.symbol}-{quote.symbol}",
        base=base,
        quote=quote,
        tick_size=tick_size,
        lot_size=lot_size,
        min_quantity=min_quantity,
        min_notional=min_notional,
        maker_fee_rate=maker_fee_rate,
        taker_fee_rate=taker_fee_rate,
        price_band=price_band,
        status=MarketStatus.PRE_OPEN,
    )


@transaction.atomic
def market_open(*, market: Market) -> Market:
    """Open a PRE_OPEN market for trading. (Halts and resumes of a trading market go
    through the matcher's journal so the book and the row never disagree.)"""
    updated = Market.objects.filter(pk=market.pk, status=MarketStatus.PRE_OPEN).update(
        status=MarketStatus.OPEN
    )
    market.refresh_from_db(fields=["status", "updated_at"])
    if not updated and market.status != MarketStatus.OPEN:
        raise ValueError(f"market {market.symbol} is {market.status}, not PRE_OPEN")
    return market


class MarketStateError(ValueError):
    pass


@transaction.atomic(durable=True)
def market_halt(*, market: Market) -> OrderCommand:
    """Ask the matcher to halt ``market``: it stops accepting orders and amends, keeps
    the book, and still applies cancels and expiries. The market row turns HALTED in
    the same transaction as the matcher applies it, never before."""
    if market.status != MarketStatus.OPEN:
        raise MarketStateError(f"{market.symbol} is {market.status}, not OPEN")
    return OrderCommand.objects.create(market=market, kind=CommandKind.HALT)


@transaction.atomic(durable=True)
def market_resume(*, market: Market) -> OrderCommand:
    if market.status != MarketStatus.HALTED:
        raise MarketStateError(f"{market.symbol} is {market.status}, not HALTED")
    return OrderCommand.objects.create(market=market, kind=CommandKind.RESUME)
