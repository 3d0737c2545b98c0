"""A connection's credential and its end: revocation reaches it whatever it unsubscribed,
any header spelling the REST API takes works here too, and the dead-man switch fires on
disconnect even when the channel layer does not answer. And a merged delta that ends at
the snapshot's own sequence still reaches the client."""

import json
import time

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from dex.redis import redis_client
from exchange import consumers
from exchange.matcher.publish import book_key, encode, public_channel
from exchange.models import CommandKind, OrderCommand, WebSocketConnection
from exchange.services.sessions import api_key_revoke, session_end
from tests.exchange.ws.conftest import api_key, connect, delta, request, session_token

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_revoked_key_closes_the_connection_after_an_unsubscribe(trader, market, book):
    book(5)
    secret = api_key(trader, scopes=["read", "trade"])
    key = trader.api_keys.get()

    async def scenario():
        ws = await connect([("x-api-key", secret)])
        await request(ws, {"type": "subscribe", "channels": ["account", f"trades.{market.symbol}"]})
        await ws.receive_json_from(timeout=5)  # the balances
        answer = await request(ws, {"type": "unsubscribe", "channels": [f"trades.{market.symbol}"]})
        assert answer["type"] == "unsubscribed"
        await database_sync_to_async(api_key_revoke)(account=trader, key=key)
        error = await ws.receive_json_from(timeout=5)
        close = await ws.receive_output(timeout=5)
        await ws.disconnect(code=close.get("code", 1000))
        return error, close

    error, close = async_to_sync(scenario)()
    assert error["code"] == "AUTH_REVOKED"
    assert (close["type"], close["code"]) == ("websocket.close", 4401)


def test_a_signed_out_session_closes_the_connection_after_an_unsubscribe(trader, market, book):
    book(5)
    token = session_token(trader)

    async def scenario():
        ws = await connect()
        await request(ws, {"type": "auth", "token": token})
        await request(ws, {"type": "subscribe", "channels": [f"trades.{market.symbol}"]})
        await request(ws, {"type": "unsubscribe", "channels": [f"trades.{market.symbol}"]})
        await database_sync_to_async(session_end)(token=token)
        error = await ws.receive_json_from(timeout=5)
        close = await ws.receive_output(timeout=5)
        await ws.disconnect(code=close.get("code", 1000))
        return error, close

    error, close = async_to_sync(scenario)()
    assert error["code"] == "AUTH_REVOKED"
    assert close["code"] == 4401


def test_a_bearer_token_after_a_tab_authenticates_as_over_rest(trader):
    token = session_token(trader)

    async def scenario():
        ws = await connect([("authorization", f"Bearer\t{token}")])
        pong = await request(ws, {"type": "ping", "id": 1})
        await ws.disconnect()
        return pong

    assert async_to_sync(scenario)()["type"] == "pong"
    row = WebSocketConnection.objects.get()
    assert row.account_id == trader.pk
    assert row.disconnected_at is not None


def test_the_dead_man_switch_fires_when_the_channel_layer_does_not_answer(
    trader, market, monkeypatch
):
    token = session_token(trader)

    async def scenario():
        ws = await connect([("authorization", f"Bearer {token}")])
        armed = await request(ws, {"type": "cancel_on_disconnect", "markets": [market.symbol]})
        assert armed["type"] != "error", armed

        async def unreachable(*args, **kwargs):
            raise ConnectionError("the channel layer's Redis is gone")

        monkeypatch.setattr(get_channel_layer(), "group_discard", unreachable)
        await ws.disconnect()

    async_to_sync(scenario)()
    assert OrderCommand.objects.filter(
        kind=CommandKind.CANCEL_ALL, account=trader, market=market
    ).exists()
    assert WebSocketConnection.objects.get().disconnected_at is not None


def test_a_merged_delta_ending_at_the_snapshots_sequence_reaches_the_client(
    market, book, monkeypatch
):
    symbol = market.symbol
    # Batch D (9..10) left bids 99:1 and 98:2; then a batch that only expired the 98 bid
    # (E: it uses no sequence, 11..10); F (11..11) follows. The snapshot is read after D
    # and before E; D and E reach the web process together, and its hub merges them.
    book(10, bids=[["99.00", "1.000"], ["98.00", "2.000"]])
    d = delta(symbol, 9, 10, bids=[["99.00", "1.000"]])
    e = delta(symbol, 11, 10, bids=[["98.00", "0"]])
    f = delta(symbol, 11, 11, asks=[["101.00", "1.000"]])
    read = consumers.published_book

    def read_then_publish(ref):
        snapshot = read(ref)
        client = redis_client()
        after_e = {"symbol": symbol, "sequence": 10, "bids": [["99.00", "1.000"]], "asks": []}
        client.set(book_key(symbol), json.dumps(after_e))
        pipe = client.pipeline(transaction=False)
        pipe.publish(public_channel(symbol), encode(d))
        pipe.publish(public_channel(symbol), encode(e))
        pipe.execute()
        time.sleep(0.3)
        return snapshot

    monkeypatch.setattr(consumers, "published_book", read_then_publish)

    async def scenario():
        ws = await connect()
        await ws.send_json_to({"type": "subscribe", "channels": [f"book.{symbol}"]})
        got = []
        while not await ws.receive_nothing(timeout=0.5):
            got.append(await ws.receive_json_from(timeout=5))
        redis_client().publish(public_channel(symbol), encode(f))
        got.append(await ws.receive_json_from(timeout=5))
        await ws.disconnect()
        return got

    kept: dict[str, dict[str, str]] = {"bids": {}, "asks": {}}
    sequence = None
    for message in async_to_sync(scenario)():
        if message["type"] == "book.snapshot":
            kept = {side: dict(map(tuple, message[side])) for side in ("bids", "asks")}
            sequence = message["sequence"]
        elif message["type"] == "book.delta":
            assert message["first_sequence"] == sequence + 1, message  # it chains
            for side in ("bids", "asks"):
                for price, size in message[side]:
                    if size == "0":
                        kept[side].pop(price, None)
                    else:
                        kept[side][price] = size
            sequence = message["sequence"]
    assert kept == {"bids": {"99.00": "1.000"}, "asks": {"101.00": "1.000"}}
    assert sequence == 11


@pytest.mark.parametrize("ending", ["key expires", "session expires", "account closed"])
def test_a_credential_that_ends_without_a_revocation_closes_the_connection(
    trader, market, book, settings, ending
):
    from datetime import timedelta

    from django.utils import timezone

    from exchange.models import AccountStatus, ApiKey
    from exchange.services.sessions import _session_key

    book(5)
    settings.WS_CREDENTIAL_RECHECK_SECONDS = 0.3
    if ending == "session expires":
        token = session_token(trader)
        headers = [("authorization", f"Bearer {token}")]
    else:
        headers = [("x-api-key", api_key(trader, scopes=["read", "trade"]))]

    def end() -> None:
        if ending == "key expires":
            ApiKey.objects.filter(account=trader).update(
                expires_at=timezone.now() - timedelta(seconds=1)
            )
        elif ending == "session expires":
            redis_client().delete(_session_key(token))  # its time to live ran out
        else:
            type(trader).objects.filter(pk=trader.pk).update(status=AccountStatus.CLOSED)

    async def scenario():
        ws = await connect(headers)
        await request(ws, {"type": "subscribe", "channels": ["account"]})
        assert (await ws.receive_json_from(timeout=5))["type"] == "account.balances"
        assert await ws.receive_nothing(timeout=0.6)  # checked again: still good
        await database_sync_to_async(end)()
        error = await ws.receive_json_from(timeout=5)
        close = await ws.receive_output(timeout=5)
        await ws.disconnect(code=close.get("code", 1000))
        return error, close

    error, close = async_to_sync(scenario)()
    assert (error["code"], close["code"]) == ("AUTH_REVOKED", 4401)
