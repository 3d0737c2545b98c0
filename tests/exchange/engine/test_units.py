"""Decimal <-> integer conversion at the engine boundary."""

from decimal import Decimal

import pytest

from exchange.engine import MarketUnits, OffLotError, OffQuoteStepError, OffTickError

UNITS = MarketUnits(tick_size=Decimal("0.01"), lot_size=Decimal("0.001"))


@pytest.mark.parametrize(
    ("price", "ticks"),
    [("0.01", 1), ("123.45", 12345), ("100", 10000), (Decimal("58533.00"), 5853300), (7, 700)],
)
def test_prices_convert_to_ticks_and_back(price, ticks):
    assert UNITS.price_to_ticks(price) == ticks
    assert UNITS.ticks_to_price(ticks) == Decimal(price)


@pytest.mark.parametrize(("quantity", "lots"), [("0.001", 1), ("2.5", 2500), (3, 3000)])
def test_sizes_convert_to_lots_and_back(quantity, lots):
    assert UNITS.qty_to_lots(quantity) == lots
    assert UNITS.lots_to_qty(lots) == Decimal(quantity)


def test_off_tick_price_names_the_value_and_the_tick():
    with pytest.raises(OffTickError, match=r"price 1\.005 .* tick size 0\.01"):
        UNITS.price_to_ticks("1.005")


def test_off_lot_size_names_the_value_and_the_lot():
    with pytest.raises(OffLotError, match=r"quantity 0\.0005 .* lot size 0\.001"):
        UNITS.qty_to_lots(Decimal("0.0005"))


def test_unit_errors_are_value_errors():
    with pytest.raises(ValueError, match="tick"):
        UNITS.price_to_ticks("0.999")


def test_quote_amounts_use_tick_times_lot_units():
    assert UNITS.quote_step == Decimal("0.00001")
    assert UNITS.quote_to_units("100.5") == 10_050_000
    assert UNITS.units_to_quote(10_050_000) == Decimal("100.5")
    # ticks x lots is exactly a quote amount in units.
    assert UNITS.notional(12345, 2500) == Decimal("123.45") * Decimal("2.5")
    assert UNITS.units_to_quote(12345 * 2500) == Decimal("308.625")


def test_quote_amount_off_the_grid_is_refused_or_rounded_down_on_request():
    with pytest.raises(OffQuoteStepError):
        UNITS.quote_to_units("0.000001")
    assert UNITS.quote_to_units("1.000009", round_down=True) == 100_000


@pytest.mark.parametrize("bad", [1.5, "abc", "NaN", "Infinity"])
def test_non_decimal_input_is_refused(bad):
    with pytest.raises((TypeError, ValueError)):
        UNITS.price_to_ticks(bad)


@pytest.mark.parametrize(("tick", "lot"), [("0", "1"), ("1", "-1")])
def test_steps_must_be_positive(tick, lot):
    with pytest.raises(ValueError, match="positive"):
        MarketUnits(tick, lot)
