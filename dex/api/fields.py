"""Wire formats shared by the API's serializers."""

from __future__ import annotations

import re
from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

# The platform's precision: NUMERIC(20, 8) prices and NUMERIC(30, 8) amounts.
PRICE_DIGITS = 20
AMOUNT_DIGITS = 30
DECIMALS = 8
UINT256_MAX = 2**256 - 1


# An amount on the wire: ASCII digits with an optional fraction and exponent (a JSON
# number, or the same as a string). ``Decimal()`` alone also reads other scripts' digits
# ("١٠٠") and digit-group underscores ("1_00"), which a wallet would show the trader
# differently from the number the request then carries.
PLAIN_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
SMALLEST_AMOUNT = Decimal(1).scaleb(-DECIMALS)


class PlainDecimalField(serializers.DecimalField):
    """A positive amount with at most 8 decimal places, written in plain ASCII."""

    def __init__(self, *, max_digits: int, **kwargs) -> None:
        super().__init__(
            max_digits=max_digits, decimal_places=DECIMALS, min_value=SMALLEST_AMOUNT, **kwargs
        )

    def to_internal_value(self, data) -> Decimal:
        plain = isinstance(data, int | float) and not isinstance(data, bool)
        if not plain and not (isinstance(data, str) and PLAIN_DECIMAL.fullmatch(data.strip())):
            self.fail("invalid")
        return super().to_internal_value(data)


def price_field(**kwargs) -> PlainDecimalField:
    return PlainDecimalField(max_digits=PRICE_DIGITS, **kwargs)


def amount_field(**kwargs) -> PlainDecimalField:
    return PlainDecimalField(max_digits=AMOUNT_DIGITS, **kwargs)


@extend_schema_field({"type": "string", "pattern": "^[0-9]{1,78}$", "example": "1"})
class Uint256Field(serializers.Field):
    """A uint256 (an EIP-712 nonce) as a JSON integer or a decimal string; rendered as a
    string, since JavaScript numbers lose precision past 2**53."""

    default_error_messages = {
        "invalid": "must be a whole number from 0 to 2**256 - 1, as an integer or a string",
    }

    def to_internal_value(self, data) -> int:
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            value = data
        elif isinstance(data, str) and data.isascii() and data.isdigit() and len(data) <= 78:
            value = int(data)
        else:
            self.fail("invalid")
        if not 0 <= value <= UINT256_MAX:
            self.fail("invalid")
        return value

    def to_representation(self, value) -> str:
        return str(int(value))


# 9999-12-31T23:59:59Z: the last second a Python datetime (and so the API) can hold.
UNIX_TIME_MAX = 253_402_300_799


class UnixTimeField(serializers.IntegerField):
    """Seconds since the epoch, as the EIP-712 struct carries expiry."""

    def __init__(self, **kwargs) -> None:
        super().__init__(min_value=1, max_value=UNIX_TIME_MAX, **kwargs)
