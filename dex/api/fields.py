"""Wire formats shared by the API's serializers."""

from __future__ import annotations

from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

# The platform's precision: NUMERIC(20, 8) prices and NUMERIC(30, 8) amounts.
PRICE_DIGITS = 20
AMOUNT_DIGITS = 30
DECIMALS = 8
UINT256_MAX = 2**256 - 1


def price_field(**kwargs) -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=PRICE_DIGITS,
        decimal_places=DECIMALS,
        min_value=Decimal("0.00000001"),
        **kwargs,
    )


def amount_field(**kwargs) -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=AMOUNT_DIGITS,
        decimal_places=DECIMALS,
        min_value=Decimal("0.00000001"),
        **kwargs,
    )


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
