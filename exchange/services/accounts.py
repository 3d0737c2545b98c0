"""Trader accounts."""

from django.db import transaction
from eth_utils import is_address

from exchange.models import Account


class InvalidWalletAddress(ValueError):
    pass


def wallet_address_normalize(address: str) -> str:
    """Accept an EVM address in any case (checksummed or not); store it lower-case."""
    if not isinstance(address, str) or not is_address(address):
        raise InvalidWalletAddress(f"{address!r} is not an EVM address")
    return address.lower()


@transaction.atomic
def account_register(
    *, wallet_address: str, label: str = "", country: str = "", kyc_tier: int = 0
) -> Account:
    return Account.objects.create(
        wallet_address=wallet_address_normalize(wallet_address),
        label=label,
        country=country.upper(),
        kyc_tier=kyc_tier,
    )
