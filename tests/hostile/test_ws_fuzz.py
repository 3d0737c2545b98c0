"""``/ws/stream/`` under arbitrary frames: text and binary, random JSON, deep nesting,
huge strings, unknown message types, subscriptions to strange channel names. The
consumer answers each with a normal reply or an error and a close code from its
protocol, its task never raises, and the process keeps serving a normal client.

(A client that never reads is the slow-consumer case, closed with 4509:
``tests/exchange/ws/test_stream.py::test_a_client_that_stops_reading_is_disconnected_not_buffered``.)"""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from hypothesis import given
from hypothesis import strategies as st

from dex.asgi import application
from exchange import consumers
from tests.hostile.conftest import FUZZ

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/stream/"
HUGE = "A" * 5000  # past the consumer's inbound limit
CLOSE_CODES = {
    consumers.CLOSE_BAD_MESSAGE,
    consumers.CLOSE_AUTH_FAILED,
    consumers.CLOSE_FORBIDDEN,
    consumers.CLOSE_UNKNOWN_CHANNEL,
    consumers.CLOSE_TOO_MANY,
}
REPLY_TYPES = {
    "pong",
    "subscribed",
    "unsubscribed",
    "authenticated",
    "cancel_on_disconnect",
    "book.snapshot",
    "ticker",
    "candle",
    "account.balances",
    "error",
}
MESSAGE_TYPES = [*consumers.StreamConsumer.HANDLERS, "Ping", "ping ", "", "book.delta", "__init__"]
CHANNEL_NAMES = [
    "book.ETH-USDC",
    "trades.ETH-USDC",
    "ticker.ETH-USDC",
    "candles.ETH-USDC.1m",
    "candles.ETH-USDC.2m",
    "account",
    "book.NOPE-USDC",
    "book.eth-usdc",
    "book.ETH-USDC\n",
    "book.ETH-USDC\x00",
    "book.",
    "book..",
    "*",
    "book.*",
    "../account",
    "account.1",
    "book.ETH-USDC" + "A" * 60,
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["\x00", "\ud800", HUGE, "Infinity"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
channel_names = st.sampled_from(CHANNEL_NAMES) | st.text(max_size=70)
messages = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["subscribe", "unsubscribe"])},
        optional={
            "channels": st.lists(channel_names, max_size=4) | json_values,
            "id": json_values,
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("cancel_on_disconnect")},
        optional={
            "markets": st.lists(st.sampled_from(["ETH-USDC", "\x00", "X" * 200]) | st.text())
            | json_values,
            "heartbeat_timeout": scalars,
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("auth")},
        optional={
            "token": scalars,
            "api_key": st.sampled_from(["a.b", ".", "\x00.\x00"]) | scalars,
        },
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(MESSAGE_TYPES) | scalars}, optional={"id": json_values}
    ),
    json_values,
)
frames = st.one_of(
    messages.map(lambda m: {"text": json.dumps(m)}),
    st.integers(min_value=1, max_value=3000).map(lambda n: {"text": "[" * n + "]" * n}),
    st.integers(min_value=1, max_value=3000).map(lambda n: {"text": '{"a":' * n + "1" + "}" * n}),
    st.text(max_size=50).map(lambda t: {"text": t}),
    st.sampled_from(["", "null", "NaN", "{", '{"type": "ping"}' * 2, " " * 5000]).map(
        lambda t: {"text": t}
    ),
    st.binary(max_size=64).map(lambda b: {"bytes": b}),
)


@pytest.fixture(autouse=True)
def _fresh_market_cache():
    # Each test database numbers its markets anew; production never deletes one.
    consumers._markets.clear()
    yield
    consumers._markets.clear()


async def open_socket() -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, PATH)
    communicator.scope["client"] = ("203.0.113.9", 50000)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def replies_until_quiet(communicator: WebsocketCommunicator) -> list[dict]:
    """What the server sent in answer to a frame (every frame gets at least one
    message) until it closed or went quiet. Raises what the consumer's task raised."""
    out = [await communicator.receive_output(timeout=5)]
    while out[-1]["type"] != "websocket.close" and not await communicator.receive_nothing(
        timeout=0.05, interval=0.01
    ):
        out.append(await communicator.receive_output(timeout=1))
    return out


def assert_protocol(outputs: list[dict]) -> int | None:
    """Every output is a JSON reply the protocol knows, or a close with one of its
    codes (after an error naming why); returns the close code, if any."""
    for n, output in enumerate(outputs):
        if output["type"] == "websocket.close":
            assert output["code"] in CLOSE_CODES, output
            assert n > 0, "closed without an error message first"
            error = json.loads(outputs[n - 1]["text"])
            assert error["type"] == "error", error
            assert error["code"], error
            return output["code"]
        assert output["type"] == "websocket.send", output
        reply = json.loads(output["text"])
        assert reply["type"] in REPLY_TYPES, reply
    return None


async def still_serving(communicator: WebsocketCommunicator) -> None:
    await communicator.send_json_to({"type": "ping", "id": "alive"})
    for _ in range(20):
        reply = await communicator.receive_json_from(timeout=5)
        if reply["type"] == "pong":
            assert reply["id"] == "alive"
            return
    raise AssertionError("no pong")


@given(sent=st.lists(frames, min_size=1, max_size=6))
@FUZZ
def test_any_frames_get_replies_or_an_error_and_a_close_never_a_crash(market, sent):
    async def scenario():
        communicator = await open_socket()
        try:
            code = None
            for frame in sent:
                await communicator.send_input({"type": "websocket.receive", **frame})
                code = assert_protocol(await replies_until_quiet(communicator))
                if code is not None:
                    break
            if code is None:
                await still_serving(communicator)
        finally:
            await communicator.disconnect(timeout=5)

    async_to_sync(scenario)()


def test_a_deeply_nested_frame_is_a_bad_message_not_a_crash(market):
    async def scenario():
        communicator = await open_socket()
        try:
            await communicator.send_to(text_data="[" * 2000 + "]" * 2000)
            outputs = await replies_until_quiet(communicator)
        finally:
            await communicator.disconnect(timeout=5)
        return outputs

    outputs = async_to_sync(scenario)()
    assert assert_protocol(outputs) == consumers.CLOSE_BAD_MESSAGE
    assert json.loads(outputs[0]["text"])["code"] == "BAD_MESSAGE"


@pytest.mark.parametrize("symbol", ["\x00", "ETH-USDC\x00", "x" * 4000])
def test_cancel_on_disconnect_refuses_a_symbol_that_cannot_be_a_market(symbol, market, funded):
    async def scenario():
        communicator = WebsocketCommunicator(
            application, PATH, headers=[(b"x-api-key", funded.api_key.encode())]
        )
        communicator.scope["client"] = ("203.0.113.9", 50000)
        assert (await communicator.connect(timeout=5))[0]
        try:
            await communicator.send_json_to({"type": "cancel_on_disconnect", "markets": [symbol]})
            outputs = await replies_until_quiet(communicator)
        finally:
            await communicator.disconnect(timeout=5)
        return outputs

    outputs = async_to_sync(scenario)()
    assert assert_protocol(outputs) in {
        consumers.CLOSE_UNKNOWN_CHANNEL,
        consumers.CLOSE_BAD_MESSAGE,
    }


@pytest.mark.parametrize(
    "message",
    [
        {"type": "auth", "api_key": "\x00.\x00"},
        {"type": "auth", "api_key": "a\x00b.c"},
        {"type": "auth", "token": "\x00"},
        {"type": "auth", "token": ""},
        {"type": "auth", "api_key": "k." + "x" * 300},
    ],
    ids=["NUL key", "NUL in a key", "NUL token", "empty token", "long key"],
)
def test_a_credential_no_client_could_hold_is_refused_before_any_lookup(message, market):
    async def scenario():
        communicator = await open_socket()
        try:
            await communicator.send_json_to(message)
            outputs = await replies_until_quiet(communicator)
        finally:
            await communicator.disconnect(timeout=5)
        return outputs

    outputs = async_to_sync(scenario)()
    assert assert_protocol(outputs) == consumers.CLOSE_AUTH_FAILED
    assert json.loads(outputs[0]["text"])["code"] == "AUTH_FAILED"


def test_after_the_fuzz_a_normal_client_is_served(market):
    async def scenario():
        hostile = await open_socket()
        await hostile.send_to(text_data="[" * 2000)
        await hostile.send_to(bytes_data=b"\x00" * 10)
        await asyncio.sleep(0.1)
        await hostile.disconnect(timeout=5)
        normal = await open_socket()
        try:
            await normal.send_json_to({"type": "subscribe", "channels": ["book.ETH-USDC"]})
            subscribed = await normal.receive_json_from(timeout=5)
            snapshot = await normal.receive_json_from(timeout=5)
            await still_serving(normal)
        finally:
            await normal.disconnect(timeout=5)
        return subscribed, snapshot

    subscribed, snapshot = async_to_sync(scenario)()
    assert subscribed["type"] == "subscribed"
    assert snapshot["type"] == "book.snapshot"
