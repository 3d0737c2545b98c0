"""A market simulator for a developer's machine: demo traders trading through the order
services, so a local exchange has a moving book, trades and balances to look at.

One market maker (demo trader 1) quotes several levels on both sides of a mid price
that drifts as a mean-reverting random walk, cancelling quotes the mid has moved away
from and filling the gaps. The other demo traders take: crossing limit IOC orders and
market orders (buys by quote amount, or by quantity with a protection price a few
percent above the best ask). Every order goes through ``order_place`` /
``order_cancel`` exactly as the API's would — signed by the trader's demo wallet —
and every refusal is an ``OrderRejected``, counted by its code and otherwise ignored:
a taker running out of funds is part of a living market, not an error.

Each ``step()`` is one service call, so ``rate`` is the number of orders and cancels
per second the exchange is offered.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from eth_account.signers.local import LocalAccount

from exchange.models import (
    TERMINAL_STATUSES,
    Account,
    Market,
    MarketStatus,
    Order,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)
from exchange.services.demo import DEMO_TRADERS, demo_wallet
from exchange.services.orders import (
    OrderRejected,
    OrderRequest,
    order_cancel,
    order_fields,
    order_place_signed,
)
from exchange.signing import sign_order

MAKER_INDEX = 1  # the demo market maker; every other demo trader takes
# Where a market with no trades and no book starts, by base asset.
START_PRICES = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}
DEFAULT_START_PRICE = 100.0


@dataclass(frozen=True)
class SimulatorConfig:
    levels: int = 5  # quotes per side
    half_spread_bps: float = 4.0  # from the mid to the best quote
    level_step_bps: float = 6.0  # between quote levels
    stale_bps: float = 8.0  # a quote this far from its level's price is replaced
    volatility_bps: float = 3.0  # the mid's random walk, per step in that market
    reversion: float = 0.002  # pull back towards the starting price, per step
    taker_share: float = 0.3  # of steps that send a taker order
    quote_notional: tuple[float, float] = (300.0, 6_000.0)  # a quote's size, in quote asset
    take_notional: tuple[float, float] = (20.0, 1_500.0)
    protection_pct: float = 3.0  # a market buy by quantity pays at most this over the ask


@dataclass
class SimulatorStats:
    steps: int = 0
    placed: int = 0
    cancelled: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    @property
    def sent(self) -> int:
        return self.placed + self.cancelled + self.rejections

    @property
    def rejections(self) -> int:
        return sum(self.rejected.values())

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0

    def summary(self) -> str:
        rejects = ", ".join(f"{code} {n}" for code, n in self.rejected.most_common(3))
        return (
            f"sent {self.sent:,}  placed {self.placed:,}  cancels {self.cancelled:,}  "
            f"rejected {self.rejections:,}{f' ({rejects})' if rejects else ''}  "
            f"{self.rate():.1f}/s"
        )


@dataclass
class Trader:
    account: Account
    wallet: LocalAccount


@dataclass
class MarketState:
    """The simulator's view of one market: its mid price and the maker's quotes."""

    market: Market
    mid: float
    anchor: float
    quotes: dict[int, Order] = field(default_factory=dict)  # live maker orders by id
    cancelling: set[int] = field(default_factory=set)


def _start_price(market: Market) -> float:
    """The last trade, else the middle of the resting book, else a plausible price."""
    last = Trade.objects.filter(market=market).order_by("-sequence").first()
    if last is not None:
        return float(last.price)
    live = Order.objects.filter(market=market, status__in=("OPEN", "PARTIALLY_FILLED"))
    bid = live.filter(side=Side.BUY).order_by("-price").values_list("price", flat=True).first()
    ask = live.filter(side=Side.SELL).order_by("price").values_list("price", flat=True).first()
    if bid is not None and ask is not None:
        return float(bid + ask) / 2
    return START_PRICES.get(market.base.symbol, DEFAULT_START_PRICE)


def demo_traders() -> list[Trader]:
    """The demo traders, market maker first; empty when ``seed_demo`` has not run."""
    traders = []
    for index in range(1, len(DEMO_TRADERS) + 1):
        wallet = demo_wallet(index)
        account = Account.objects.filter(wallet_address=wallet.address.lower()).first()
        if account is None:
            return []
        traders.append(Trader(account, wallet))
    return traders


class Simulator:
    def __init__(
        self,
        *,
        markets: list[Market],
        maker: Trader,
        takers: list[Trader],
        seed: int | None = None,
        config: SimulatorConfig | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.config = config or SimulatorConfig()
        self.maker = maker
        self.takers = takers
        self.stats = SimulatorStats()
        # Client order ids and nonces must be new on every run, seeded or not: the
        # services return the original order for a client order id they have seen.
        self.run_id = secrets.token_hex(4)
        self._count = 0
        self._last_nonce = 0
        self.states = []
        for market in markets:
            price = _start_price(market)
            state = MarketState(market=market, mid=price, anchor=price)
            state.quotes = {
                o.pk: o
                for o in Order.objects.filter(
                    account=maker.account,
                    market=market,
                    status__in=("PENDING", "OPEN", "PARTIALLY_FILLED"),
                )
            }
            self.states.append(state)

    # --- the loop ---------------------------------------------------------------------

    def run(
        self,
        *,
        rate: float,
        duration: float = 0,
        steps: int | None = None,
        progress: Callable[[SimulatorStats], None] | None = None,
        progress_every: float = 0.5,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> SimulatorStats:
        """Step at ``rate`` per second for ``duration`` seconds (0: until stopped) or
        ``steps`` steps, calling ``progress`` every ``progress_every`` seconds."""
        start = time.monotonic()
        self.stats.started = start
        next_at, last_progress, done = start, start, 0
        while not should_stop():
            now = time.monotonic()
            if (duration and now - start >= duration) or (steps is not None and done >= steps):
                break
            if next_at > now:
                time.sleep(min(next_at - now, progress_every))
                continue
            self.step()
            done += 1
            # Fall behind by at most a second: a stall is not made up for with a burst.
            next_at = max(next_at + 1 / rate, time.monotonic() - 1)
            if progress and time.monotonic() - last_progress >= progress_every:
                progress(self.stats)
                last_progress = time.monotonic()
        if progress:
            progress(self.stats)
        return self.stats

    def step(self) -> None:
        """One service call: a maker quote or cancel, or a taker order."""
        self.stats.steps += 1
        state = self.rng.choice(self.states)
        self._drift(state)
        if self.takers and self.rng.random() < self.config.taker_share:
            self._take(state)
        else:
            self._make(state)

    # --- price ------------------------------------------------------------------------

    def _drift(self, state: MarketState) -> None:
        c = self.config
        pull = -c.reversion * math.log(state.mid / state.anchor)
        state.mid *= math.exp(pull + self.rng.gauss(0, c.volatility_bps / 10_000))

    @staticmethod
    def _on_tick(market: Market, price: float, rounding: str) -> Decimal:
        tick = market.tick_size
        ticks = (Decimal(repr(price)) / tick).to_integral_value(rounding)
        return max(ticks, Decimal(1)) * tick

    def _quantity(self, market: Market, price: Decimal, notional: tuple[float, float]) -> Decimal:
        """A size on the lot worth a log-uniform notional, never below the minimums."""
        low, high = notional
        value = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        value = max(value, float(market.min_notional) * 1.2)
        lots = (Decimal(repr(value)) / price / market.lot_size).to_integral_value(ROUND_CEILING)
        quantity = lots * market.lot_size
        while quantity * price < market.min_notional:
            quantity += market.lot_size
        return max(quantity, market.min_quantity)

    # --- the market maker -------------------------------------------------------------

    def _targets(self, state: MarketState, side: str) -> list[Decimal]:
        c = self.config
        sign = -1 if side == Side.BUY else 1
        rounding = ROUND_FLOOR if side == Side.BUY else ROUND_CEILING
        return [
            self._on_tick(
                state.market,
                state.mid * (1 + sign * (c.half_spread_bps + i * c.level_step_bps) / 10_000),
                rounding,
            )
            for i in range(c.levels)
        ]

    def _refresh_quotes(self, state: MarketState) -> None:
        if not state.quotes:
            return
        for order in Order.objects.filter(pk__in=list(state.quotes)).only(
            "id", "status", "side", "price", "remaining"
        ):
            if order.status in TERMINAL_STATUSES:
                state.quotes.pop(order.pk, None)
                state.cancelling.discard(order.pk)

    def _make(self, state: MarketState) -> None:
        """Cancel the stalest quote if any is stale, else fill the nearest empty level."""
        self._refresh_quotes(state)
        live = [o for o in state.quotes.values() if o.pk not in state.cancelling]
        tolerance = self.config.stale_bps / 10_000 * state.mid
        stalest, worst = None, 0.0
        for side in (Side.BUY, Side.SELL):
            targets = self._targets(state, side)
            low, high = float(min(targets)), float(max(targets))
            for order in (o for o in live if o.side == side):
                price = float(order.price)
                distance = max(low - price, price - high, 0.0)
                crossed = price >= state.mid if side == Side.BUY else price <= state.mid
                if crossed or distance > tolerance:
                    distance += tolerance if crossed else 0.0
                    if distance > worst:
                        stalest, worst = order, distance
        if stalest is not None:
            self._cancel(state, stalest)
            return

        bids = {o.price for o in live if o.side == Side.BUY}
        asks = {o.price for o in live if o.side == Side.SELL}
        gaps = []
        for side, taken in ((Side.BUY, bids), (Side.SELL, asks)):
            for level, price in enumerate(self._targets(state, side)):
                if price not in taken and len(taken) < self.config.levels:
                    gaps.append((level, side, price))
        if not gaps:
            return  # a full, fresh book: nothing to do this step
        level = min(g[0] for g in gaps)
        _, side, price = self.rng.choice([g for g in gaps if g[0] == level])
        # Never quote through our own other side (the matcher would expire it as a
        # self-trade): the mid can move past a quote whose cancel is still queued.
        if side == Side.BUY and asks and price >= min(asks):
            return
        if side == Side.SELL and bids and price <= max(bids):
            return
        quantity = self._quantity(state.market, price, self.config.quote_notional)
        order = self._place(
            self.maker,
            state.market,
            side=side,
            type=OrderType.LIMIT,
            price=price,
            quantity=quantity,
        )
        if order is not None:
            state.quotes[order.pk] = order

    def _cancel(self, state: MarketState, order: Order) -> None:
        try:
            order_cancel(account=self.maker.account, order=order)
        except OrderRejected as exc:
            self.stats.rejected[exc.code] += 1
            state.quotes.pop(order.pk, None)  # already closed: filled under us
            return
        self.stats.cancelled += 1
        state.cancelling.add(order.pk)

    # --- the takers -------------------------------------------------------------------

    def _take(self, state: MarketState) -> None:
        market, c = state.market, self.config
        taker = self.rng.choice(self.takers)
        side = self.rng.choice((Side.BUY, Side.SELL))
        best = state.mid * (1 + c.half_spread_bps / 10_000 * (1 if side == Side.BUY else -1))
        kind = self.rng.random()
        if kind < 0.5:  # a crossing limit IOC, priced through one to three levels
            through = (1 if side == Side.BUY else -1) * self.rng.uniform(1, 3) * c.level_step_bps
            price = self._on_tick(
                market,
                best * (1 + through / 10_000),
                ROUND_CEILING if side == Side.BUY else ROUND_FLOOR,
            )
            self._place(
                taker,
                market,
                side=side,
                type=OrderType.LIMIT,
                time_in_force=TimeInForce.IOC,
                price=price,
                quantity=self._quantity(market, price, c.take_notional),
            )
        elif side == Side.BUY and kind < 0.75:  # a market buy spending a quote amount
            low, high = c.take_notional
            amount = math.exp(self.rng.uniform(math.log(low), math.log(high)))
            amount = max(amount, float(market.min_notional) * 1.2)
            self._place(
                taker,
                market,
                side=side,
                type=OrderType.MARKET,
                quote_quantity=Decimal(repr(amount)).quantize(Decimal("0.01")),
            )
        elif side == Side.BUY:  # a market buy by quantity, protected a few % above the ask
            protection = self._on_tick(market, best * (1 + c.protection_pct / 100), ROUND_CEILING)
            self._place(
                taker,
                market,
                side=side,
                type=OrderType.MARKET,
                quantity=self._quantity(market, protection, c.take_notional),
                protection_price=protection,
            )
        else:  # a market sell
            price = self._on_tick(market, best, ROUND_FLOOR)
            self._place(
                taker,
                market,
                side=side,
                type=OrderType.MARKET,
                quantity=self._quantity(market, price, c.take_notional),
            )

    # --- the services -----------------------------------------------------------------

    def _nonce(self) -> int:
        # Microseconds since the epoch, strictly increasing: new on every run.
        self._last_nonce = max(self._last_nonce + 1, time.time_ns() // 1_000)
        return self._last_nonce

    def _place(self, trader: Trader, market: Market, **fields) -> Order | None:
        self._count += 1
        request = OrderRequest(
            client_order_id=f"sim-{self.run_id}-{self._count}",
            nonce=self._nonce(),
            order_hash="",
            signature="",
            **fields,
        )
        # Signed by the trader's wallet, exactly as a client of the API signs.
        fields_signed = order_fields(account=trader.account, market=market, request=request)
        order_hash, signature = sign_order(trader.wallet.key, fields_signed)
        request = replace(request, order_hash=order_hash, signature=signature)
        try:
            order = order_place_signed(account=trader.account, market=market, request=request).order
        except OrderRejected as exc:
            self.stats.rejected[exc.code] += 1
            return None
        self.stats.placed += 1
        return order


def simulator_for_demo(
    *,
    symbols: list[str] | None = None,
    seed: int | None = None,
    config: SimulatorConfig | None = None,
) -> Simulator:
    """A simulator trading the demo traders on the named open markets (all open markets
    when none is named). Raises ``LookupError`` when the demo data is missing."""
    traders = demo_traders()
    if not traders:
        raise LookupError("the demo traders do not exist: run `manage.py seed_demo` first")
    markets = Market.objects.select_related("base", "quote").order_by("pk")
    if symbols:
        markets = markets.filter(symbol__in=symbols)
        missing = set(symbols) - {m.symbol for m in markets}
        if missing:
            raise LookupError(f"no such market: {', '.join(sorted(missing))}")
    markets = [m for m in markets if m.status == MarketStatus.OPEN]
    if not markets:
        raise LookupError("no open market to trade")
    maker = traders[MAKER_INDEX - 1]
    takers = [t for i, t in enumerate(traders, start=1) if i != MAKER_INDEX]
    return Simulator(markets=markets, maker=maker, takers=takers, seed=seed, config=config)
