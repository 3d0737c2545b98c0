"""Pages for people (the API is ``exchange/api/``): the live market dashboard."""

from __future__ import annotations

from decimal import Decimal

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from exchange import selectors
from exchange.models import Market


def _places(step: Decimal) -> int:
    """Decimal places a multiple of ``step`` needs (0.010 → 2, 1 → 0)."""
    return max(0, -step.normalize().as_tuple().exponent)


def dashboard(request: HttpRequest, symbol: str | None = None) -> HttpResponse:
    """The live book, depth, trades, ticker and candles of one market (the first one
    when none is named). Public, as market data is; the page's script does the rest
    over ``/ws/stream/`` and the public REST endpoints."""
    markets = list(selectors.market_list())
    market: Market | None
    if symbol is None:
        market = markets[0] if markets else None
    else:
        market = selectors.market_get(symbol=symbol)
        if market is None:
            raise Http404(f"there is no market {symbol!r}")
    config = None
    if market is not None:
        config = {
            "symbol": market.symbol,
            "base": market.base.symbol,
            "quote": market.quote.symbol,
            "priceDecimals": _places(market.tick_size),
            "quantityDecimals": _places(market.lot_size),
            "streamPath": "/ws/stream/",
            "apiBase": reverse("market-detail", args=[market.symbol]),
        }
    return render(
        request,
        "exchange/dashboard.html",
        {"markets": markets, "market": market, "config": config},
    )
