"""The whole API as a state machine (schemathesis' stateful testing): sequences of calls
by a trader holding an API key with every scope, following the links between operations
(an order placed, then fetched, amended and cancelled by the id its response gave).
No response may be a 5xx or differ from what the schema says of it.

Orders the fuzzer writes are signed before they are sent, with the trader's wallet over
whatever fields it chose, and half of them are aimed at the market's grid, so sequences
get past the signature and the order rules to orders that exist."""

from __future__ import annotations

import contextlib
import random
from decimal import Decimal

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis import checks

pytestmark = pytest.mark.django_db

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
PLACING = {"orders_place", "orders_place_batch"}
CREDENTIAL_HEADERS = {"authorization", "x-api-key"}


@pytest.fixture
def app(settings, funded):
    """The app in-process, inside this test's transaction: Django must not close the
    connection at the end of each request."""
    settings.ORDER_REPLY_TIMEOUT = 0
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def aimed(order: dict, market, wallet, rng: random.Random) -> dict:
    """``order`` in ``market``, half the time on its price and size grid with a client
    order id of its own (so that an aimed order does not hang on the fuzzer's), signed."""
    order = order | {"market": market.symbol}
    if rng.random() < 0.6:
        order |= {
            "client_order_id": f"st-{rng.randrange(10**12)}",
            "side": rng.choice(["BUY", "SELL"]),
            "type": "LIMIT",
            "price": str(Decimal(rng.randint(9_000, 11_000)) / 100),
            "quantity": str(Decimal(rng.randint(1, 3_000)) / 1000),
            "time_in_force": "GTC",
            "post_only": False,
            "nonce": str(rng.randint(1, 2**64)),
        }
        for name in (
            "stop_price",
            "quote_quantity",
            "protection_price",
            "display_quantity",
            "expires_at",
        ):
            order.pop(name, None)
    with contextlib.suppress(Exception):  # fields no wallet could sign keep the fuzzer's
        order["signature"] = wallet.sign(order)
    return order


def test_sequences_of_calls_get_no_5xx_and_only_documented_responses(app, funded, market):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", app)
    Machine = schema.as_state_machine()
    links = {
        (source, link.target.label)
        for source, entry in Machine._transitions.operations.items()
        for link in entry.outgoing
    }
    placed = {target for source, target in links if source == "POST /api/v1/orders/"}
    by_id = {"GET /api/v1/orders/{id}/", "DELETE /api/v1/orders/{id}/"}
    assert by_id | {"POST /api/v1/orders/{id}/amend/"} <= placed, sorted(links)

    headers = {"X-API-Key": funded.api_key}
    answered: list[tuple[str, int]] = []

    class TraderWorkflow(Machine):
        def setup(self) -> None:
            # Every sequence starts from the same data (hypothesis replays sequences,
            # and expects the same one to go the same way): each runs in a savepoint,
            # rolled back at its end. Marked as the test case's own, so the services'
            # durable transactions may run inside it as they do inside the test's.
            self.savepoint = transaction.atomic()
            self.savepoint._from_testcase = True
            self.savepoint.__enter__()

        def teardown(self) -> None:
            transaction.set_rollback(True)
            self.savepoint.__exit__(None, None, None)

        def before_call(self, case) -> None:
            rng = random.Random(f"{case.operation.label} {case.body!r} {case.headers!r}")
            if case.headers and rng.random() < 0.75:
                # Mostly as the trader: a generated credential would be refused first.
                for name in [n for n in case.headers if n.lower() in CREDENTIAL_HEADERS]:
                    del case.headers[name]
            if case.operation.definition.raw.get("operationId") not in PLACING:
                return
            if isinstance(case.body, dict) and isinstance(case.body.get("orders"), list):
                case.body["orders"] = [
                    aimed(o, market, funded.wallet, rng) if isinstance(o, dict) else o
                    for o in case.body["orders"]
                ]
            elif isinstance(case.body, dict):
                case.body = aimed(case.body, market, funded.wallet, rng)

        def after_call(self, response, case) -> None:
            super().after_call(response, case)
            answered.append((case.operation.label, response.status_code))

        def get_call_kwargs(self, case) -> dict:
            return {"headers": headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            case.validate_response(
                response, checks=CHECKS, transport_kwargs=kwargs or None, recorder=self.recorder
            )

    TraderWorkflow.run(
        settings=hypothesis_settings(
            max_examples=20,
            stateful_step_count=10,
            deadline=None,
            database=None,
            # The same sequences on every run, so CI is repeatable.
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
    # The sequences got past the refusals to orders that exist, and on to the order
    # endpoints the links lead to. Whether a followed link then answers 2xx varies with
    # the run's data (it did not in every environment), so only reaching them is
    # required here; their successful use is proven by tests/exchange/api.
    assert ("POST /api/v1/orders/", 201) in answered
    reached = {label for label, _status in answered}
    assert reached & {
        "GET /api/v1/orders/{id}/",
        "DELETE /api/v1/orders/{id}/",
        "POST /api/v1/orders/{id}/amend/",
    }
