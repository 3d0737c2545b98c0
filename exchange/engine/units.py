"""Decimal <-> integer conversion at the engine's boundary, one instance per market.

The engine only ever sees integer ticks and lots; every Decimal price or size entering or
leaving it goes through a ``MarketUnits``, so rounding happens in exactly one place (nowhere:
values off the grid are refused, never rounded, unless the caller asks to round a quote down).
"""

from decimal import ROUND_DOWN, Decimal, InvalidOperation


class UnitError(ValueError):
    """A value does not fit a market's price or size grid."""


class OffTickError(UnitError):
    """A price is not a whole multiple of the market's tick size."""


class OffLotError(UnitError):
    """A size is not a whole multiple of the market's lot size."""


class OffQuoteStepError(UnitError):
    """A quote amount is not a whole multiple of tick size x lot size."""


def _as_decimal(value: Decimal | int | str, what: str) -> Decimal:
    # Floats are refused: binary fractions would make "on the tick" a coin toss.
    if isinstance(value, float | bool):
        raise TypeError(f"{what} must be a Decimal, int or str, not {type(value).__name__}")
    try:
        result = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation:
        raise UnitError(f"{what} {value!r} is not a number") from None
    if not result.is_finite():
        raise UnitError(f"{what} {value!r} is not a finite number")
    return result


def _steps(value: Decimal, step: Decimal, error: type[UnitError], what: str, step_name: str) -> int:
    quotient, remainder = divmod(value, step)
    if remainder:
        raise error(f"{what} {value} is not a whole multiple of the {step_name} {step}")
    return int(quotient)


class MarketUnits:
    """Converts a market's Decimal prices, sizes and quote amounts to engine integers and back.

    ``tick_size`` and ``lot_size`` are the market's price and size increments.  Prices become
    ticks, sizes become lots, and quote amounts (price x size) become quote units of
    ``tick_size * lot_size``, so that ``ticks * lots`` is exactly a quote amount in units.
    """

    __slots__ = ("lot_size", "quote_step", "tick_size")

    def __init__(self, tick_size: Decimal | int | str, lot_size: Decimal | int | str) -> None:
        tick = _as_decimal(tick_size, "tick size")
        lot = _as_decimal(lot_size, "lot size")
        if tick <= 0:
            raise UnitError(f"tick size must be positive, got {tick}")
        if lot <= 0:
            raise UnitError(f"lot size must be positive, got {lot}")
        self.tick_size = tick
        self.lot_size = lot
        self.quote_step = tick * lot

    def __repr__(self) -> str:
        return f"MarketUnits(tick_size={self.tick_size}, lot_size={self.lot_size})"

    def price_to_ticks(self, price: Decimal | int | str) -> int:
        """Return ``price`` in ticks; raise OffTickError if it is not on the tick grid."""
        return _steps(
            _as_decimal(price, "price"), self.tick_size, OffTickError, "price", "tick size"
        )

    def ticks_to_price(self, ticks: int) -> Decimal:
        return ticks * self.tick_size

    def qty_to_lots(self, quantity: Decimal | int | str) -> int:
        """Return ``quantity`` in lots; raise OffLotError if it is not on the lot grid."""
        return _steps(
            _as_decimal(quantity, "quantity"), self.lot_size, OffLotError, "quantity", "lot size"
        )

    def lots_to_qty(self, lots: int) -> Decimal:
        return lots * self.lot_size

    def quote_to_units(self, amount: Decimal | int | str, *, round_down: bool = False) -> int:
        """Return a quote amount in quote units (ticks x lots).

        Raises OffQuoteStepError for an amount off the grid unless ``round_down``, which keeps
        the largest whole number of units not above it (a budget may be spent, never exceeded).
        """
        value = _as_decimal(amount, "quote amount")
        if round_down:
            units = (value / self.quote_step).to_integral_value(rounding=ROUND_DOWN)
            return int(units)
        return _steps(
            value, self.quote_step, OffQuoteStepError, "quote amount", "quote step (tick x lot)"
        )

    def units_to_quote(self, units: int) -> Decimal:
        return units * self.quote_step

    def notional(self, ticks: int, lots: int) -> Decimal:
        """The quote amount of ``lots`` at ``ticks``: exact, with the scale of tick x lot."""
        return ticks * lots * self.quote_step
