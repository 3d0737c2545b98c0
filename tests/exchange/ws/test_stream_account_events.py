"""Events from outside the matcher on a private stream: balances pushed when a deposit,
a withdrawal or a staff adjustment moves them, and connections closed when the
credential they signed in with is revoked or signed out."""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async

from exchange.services.sessions import api_key_revoke, session_end
from portfolio.services.vault import withdrawal_request
from tests.exchange.ws.conftest import api_key, closed_with, connect, request, session_token
from tests.portfolio import sim

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal
WALLET = "0x" + "ab" * 20


def run(coroutine_function):
    return async_to_sync(coroutine_function)()


def money(message: dict) -> dict[str, tuple[Decimal, Decimal]]:
    assert message["type"] == "account.balances", message
    return {b["asset"]: (D(b["available"]), D(b["held"])) for b in message["balances"]}


def test_deposits_and_withdrawals_push_the_new_balances(trader, other_trader, market):
    token, other_token = session_token(trader), session_token(other_trader)

    async def scenario():
        mine = await connect([("authorization", f"Bearer {token}")])
        theirs = await connect([("authorization", f"Bearer {other_token}")])
        for ws in (mine, theirs):
            await request(ws, {"type": "subscribe", "channels": ["account"]})
            assert money(await ws.receive_json_from(timeout=5)) == {}

        await database_sync_to_async(sim.deposit)(trader, market.quote, "250")
        after_deposit = money(await mine.receive_json_from(timeout=5))

        await database_sync_to_async(withdrawal_request)(
            account=trader,
            asset=market.quote,
            amount=D("100"),
            destination_address=WALLET,
            idempotency_key="w-1",
        )
        after_withdrawal = money(await mine.receive_json_from(timeout=5))
        others_saw_nothing = await theirs.receive_nothing(timeout=0.3)
        for ws in (mine, theirs):
            await ws.disconnect()
        return after_deposit, after_withdrawal, others_saw_nothing

    after_deposit, after_withdrawal, others_saw_nothing = run(scenario)
    assert after_deposit == {"USDC": (D(250), D(0))}
    assert after_withdrawal == {"USDC": (D(150), D(100))}
    assert others_saw_nothing


def test_revoking_an_api_key_closes_the_streams_that_signed_in_with_it(trader):
    revoked, kept = api_key(trader, scopes=["read"]), api_key(trader, scopes=["read"])
    revoked_key = trader.api_keys.order_by("pk").first()

    async def scenario():
        by_header = await connect([("x-api-key", revoked)])
        by_message = await connect()
        await request(by_message, {"type": "auth", "api_key": revoked})
        other_key = await connect([("x-api-key", kept)])
        await database_sync_to_async(api_key_revoke)(account=trader, key=revoked_key)
        closed = [await closed_with(ws) for ws in (by_header, by_message)]
        still_open = await request(other_key, {"type": "ping", "id": 1})
        await other_key.disconnect()
        return closed, still_open

    closed, still_open = run(scenario)
    assert [(error["code"], code) for error, code in closed] == [("AUTH_REVOKED", 4401)] * 2
    assert still_open["type"] == "pong"


def test_signing_out_closes_the_streams_of_that_session_only(trader):
    ended, other = session_token(trader), session_token(trader)

    async def scenario():
        signed_out = await connect([("authorization", f"Bearer {ended}")])
        other_session = await connect([("authorization", f"Bearer {other}")])
        await database_sync_to_async(session_end)(token=ended)
        error, code = await closed_with(signed_out)
        still_open = await request(other_session, {"type": "ping", "id": 2})
        await other_session.disconnect()
        return error["code"], code, still_open

    code, close_code, still_open = run(scenario)
    assert (code, close_code) == ("AUTH_REVOKED", 4401)
    assert still_open["type"] == "pong"
