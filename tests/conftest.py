"""Fixtures shared by the whole suite.

The engine's tests run with ``-p no:django``, so nothing here may import Django at
module level: Django-backed fixtures import what they need when they run.
"""

import faulthandler
import os
import sys
import threading
import time

import pytest

# Once pytest has printed its summary the process must end: a thread left waiting
# (an event loop that cannot finish, a stuck client) would otherwise keep the
# interpreter alive at exit and hold a CI run until it is killed from outside.
EXIT_GRACE_SECONDS = 60
_exit_status = [0]


def pytest_sessionfinish(session, exitstatus):
    _exit_status[0] = int(exitstatus)


def pytest_unconfigure(config):
    def watchdog():
        time.sleep(EXIT_GRACE_SECONDS)
        sys.stderr.write(
            f"\npytest had not exited {EXIT_GRACE_SECONDS}s after its summary; "
            "the threads still running:\n"
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(_exit_status[0] or 1)

    threading.Thread(target=watchdog, name="exit-watchdog", daemon=True).start()


@pytest.fixture(autouse=True, scope="session")
def _request_threads_closed(request):
    """Requests served in-process (``dex.asgi.application``) leave pooled threads that
    may hold database connections: closed before the test database is dropped (this
    fixture is set up after the database, so it is torn down before)."""
    if request.config.pluginmanager.hasplugin("django"):
        request.getfixturevalue("django_db_setup")
    yield
    asgi = sys.modules.get("dex.asgi")
    if asgi is not None:
        asgi.request_threads.close()


@pytest.fixture
def base(db):
    from tests.factories import AssetFactory

    return AssetFactory(symbol="ETH")


@pytest.fixture
def quote(db):
    from tests.factories import AssetFactory

    return AssetFactory(symbol="USDC", decimals=6)


@pytest.fixture
def market(base, quote):
    """ETH-USDC, open: tick 0.01, lot 0.001, maker 2 bps, taker 5 bps."""
    from tests.factories import MarketFactory

    return MarketFactory(base=base, quote=quote)


@pytest.fixture
def trader(db):
    from tests.factories import AccountFactory

    return AccountFactory()


@pytest.fixture
def other_trader(db):
    from tests.factories import AccountFactory

    return AccountFactory()


@pytest.fixture
def buyer(quote):
    """A trader with 10,000 USDC."""
    from tests.factories import AccountFactory
    from tests.portfolio import sim

    account = AccountFactory(kyc_tier=1)
    sim.deposit(account, quote, "10000")
    return account


@pytest.fixture
def seller(base):
    """A trader with 50 ETH."""
    from tests.factories import AccountFactory
    from tests.portfolio import sim

    account = AccountFactory(kyc_tier=1)
    sim.deposit(account, base, "50")
    return account


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops-1", is_staff=True, password="x")


@pytest.fixture
def other_staff(django_user_model):
    return django_user_model.objects.create_user("ops-2", is_staff=True, password="x")


@pytest.fixture
def matchers(market, tmp_path):
    """``run_matcher`` processes for ``market`` (started by the test), against the test
    database; killed at the end, with the market's Redis state."""
    from exchange.matcher.publish import book_key, redis_client
    from exchange.matcher.runner import heartbeat_key
    from tests.live import Matchers

    client = redis_client()
    client.delete(book_key(market.symbol), heartbeat_key(market.symbol))
    running = Matchers(market.symbol, tmp_path)
    yield running
    running.kill_all()
    client.delete(book_key(market.symbol), heartbeat_key(market.symbol))
