import pytest

from tests.api_support import Wallet, key_client
from tests.portfolio import sim


@pytest.fixture(autouse=True)
def _no_reply_wait(settings):
    # No matcher runs in these tests: an order request would wait for nothing.
    settings.ORDER_REPLY_TIMEOUT = 0.01


@pytest.fixture
def alice(quote, base) -> Wallet:
    """A tier-1 trader with 10,000 USDC and 10 ETH."""
    wallet = Wallet.create(kyc_tier=1, country="GB")
    sim.deposit(wallet.account, quote, "10000")
    sim.deposit(wallet.account, base, "10")
    return wallet


@pytest.fixture
def bob(quote, base) -> Wallet:
    wallet = Wallet.create(kyc_tier=1, country="DE")
    sim.deposit(wallet.account, quote, "10000")
    sim.deposit(wallet.account, base, "10")
    return wallet


@pytest.fixture
def api(alice):
    """Alice's client, holding an API key with every scope."""
    return key_client(alice.account)


@pytest.fixture
def bob_api(bob):
    return key_client(bob.account)
