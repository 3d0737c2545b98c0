"""The live OpenAPI schema, fuzzed: schemathesis loads ``/api/schema/`` from the running
app and sends every operation generated requests, valid and invalid, as an
authenticated trader with funds and orders. No response may be a 5xx, and every
response must match what the schema says of it (status, content type, body)."""

from decimal import Decimal

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.generation import GenerationMode

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 15


@pytest.fixture
def app(settings, world):
    """The app in-process, inside this test's transaction: Django must not close the
    connection at the end of each request. (After ``world``: Django's test client
    reconnects the closing handler after each of its requests.)"""
    settings.ORDER_REPLY_TIMEOUT = 0
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def world(market, quote, base):
    """A funded trader with an API key, a resting order, a fill and a withdrawal."""
    from exchange.matcher.market import MarketMatcher
    from portfolio.services.vault import withdrawal_request
    from tests.api_support import Wallet, key_client
    from tests.portfolio import sim

    alice = Wallet.create(kyc_tier=1)
    bob = Wallet.create(kyc_tier=1)
    for wallet in (alice, bob):
        sim.deposit(wallet.account, quote, "100000")
        sim.deposit(wallet.account, base, "100")
    alice_api, bob_api = key_client(alice.account), key_client(bob.account)
    alice_api.post("/api/v1/orders/", alice.order(market, client_order_id="rest"), format="json")
    bob_api.post(
        "/api/v1/orders/", bob.order(market, side="SELL", price="101", quantity="1"), format="json"
    )
    MarketMatcher(market).run_batch()
    alice_api.post(
        "/api/v1/orders/", alice.order(market, side="BUY", price="101", quantity="1"), format="json"
    )
    MarketMatcher(market).run_batch()
    withdrawal_request(
        account=alice.account,
        asset=quote,
        amount=Decimal("10"),
        destination_address="0x" + "ab" * 20,
        idempotency_key="w",
    )
    return alice, alice_api


def test_no_request_gets_a_5xx_or_a_response_the_schema_does_not_describe(app, world, market):
    alice, client = world
    headers = {"X-API-Key": client._credentials["HTTP_X_API_KEY"]}
    existing = {
        "symbol": market.symbol,
        "pk": alice.account.orders.order_by("id").first().pk,
        "client_order_id": "rest",
    }
    schema = schemathesis.openapi.from_wsgi("/api/schema/", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25  # every endpoint is in the schema

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode), aim=st.booleans())
            @hypothesis_settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                # The same examples on every run, so CI is repeatable; run it with
                # more examples and without this to explore.
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case, aim):
                # Half the time aim path parameters at things that exist, so the
                # fuzzer reaches past the 404s.
                if aim and case.path_parameters:
                    for name in case.path_parameters.keys() & existing.keys():
                        case.path_parameters[name] = existing[name]
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                fuzz()
            except Unsatisfiable:
                # An operation with nothing to send wrong (no body, no parameters
                # with constraints) has no negative cases.
                assert mode is GenerationMode.NEGATIVE, operation.label
