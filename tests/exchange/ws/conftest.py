"""Helpers for the stream tests: a WebSocket client of the ASGI application, credentials,
book snapshots in Redis, and public messages and channel-layer events as the matcher
sends them."""

from __future__ import annotations

import json
import secrets

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from dex.asgi import application
from dex.redis import redis_client
from exchange import consumers
from exchange.matcher.publish import book_key, encode, public_channel
from exchange.services.sessions import _session_key, api_key_create

PATH = "/ws/stream/"


@pytest.fixture(autouse=True)
def _fresh_market_cache():
    # Each test database numbers its markets anew; production never deletes one.
    consumers._markets.clear()
    yield
    consumers._markets.clear()


@pytest.fixture
def book(market):
    """Sets the matcher's published book of ``market`` in Redis."""
    key = book_key(market.symbol)
    client = redis_client()
    client.delete(key)

    def put(sequence: int, bids=(), asks=()) -> None:
        client.set(
            key,
            json.dumps(
                {
                    "symbol": market.symbol,
                    "sequence": sequence,
                    "bids": [list(level) for level in bids],
                    "asks": [list(level) for level in asks],
                }
            ),
        )

    yield put
    client.delete(key)


def session_token(account) -> str:
    """A wallet session for ``account``, as signing in would open."""
    token = secrets.token_urlsafe(16)
    redis_client().set(_session_key(token), account.pk, ex=600)
    return token


def api_key(account, scopes=("read", "trade")) -> str:
    return api_key_create(account=account, name="ws", scopes=list(scopes)).secret


async def connect(headers=(), client=("203.0.113.7", 50000)) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        application, PATH, headers=[(k.encode(), v.encode()) for k, v in headers]
    )
    communicator.scope["client"] = client
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def request(communicator: WebsocketCommunicator, message: dict) -> dict:
    await communicator.send_json_to(message)
    return await communicator.receive_json_from(timeout=5)


async def closed_with(communicator: WebsocketCommunicator) -> tuple[dict, int]:
    """The error the server sent and the code it then closed with."""
    error = await communicator.receive_json_from(timeout=5)
    close = await communicator.receive_output(timeout=5)
    assert close["type"] == "websocket.close", close
    await communicator.disconnect(code=close["code"], timeout=5)
    return error, close["code"]


def delta(symbol: str, first: int, last: int, bids=(), asks=()) -> dict:
    return {
        "type": "book.delta",
        "symbol": symbol,
        "first_sequence": first,
        "sequence": last,
        "bids": [list(b) for b in bids],
        "asks": [list(a) for a in asks],
    }


async def group_send(group: str, message: dict) -> None:
    await get_channel_layer().group_send(group, message)


def public_send_now(message: dict) -> None:
    """Publish a public message (``book.delta``, ``trades``) as the matcher does."""
    redis_client().publish(public_channel(message["symbol"]), encode(message))


async def public_send(message: dict) -> None:
    public_send_now(message)
