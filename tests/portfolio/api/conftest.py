from tests.exchange.api.conftest import alice, api, bob, bob_api  # noqa: F401
