"""The ASGI application serves HTTP through Django and WebSockets through Channels."""

import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import HttpCommunicator, WebsocketCommunicator

from dex.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def _ws(path: str, headers=()):
    communicator = WebsocketCommunicator(application, path, headers=list(headers))
    connected, code = await communicator.connect()
    return communicator, connected, code


def test_http_reaches_django_through_the_asgi_router():
    async def run():
        communicator = HttpCommunicator(
            application, "GET", "/healthz", headers=[(b"host", b"localhost")]
        )
        response = await communicator.get_response()
        return response

    response = async_to_sync(run)()
    assert response["status"] == 200
    assert json.loads(response["body"])["status"] == "ok"


def test_system_socket_answers_ping_with_pong():
    async def run():
        communicator, connected, _ = await _ws("/ws/system/")
        assert connected
        await communicator.send_json_to({"type": "ping", "id": 7})
        reply = await communicator.receive_json_from()
        await communicator.disconnect()
        return reply

    reply = async_to_sync(run)()
    assert reply["type"] == "pong"
    assert reply["id"] == 7
    assert reply["server_time"].endswith("+00:00")


@pytest.mark.parametrize(
    "message",
    [
        {"text_data": '{"type": "subscribe"}'},
        {"text_data": "not json"},
        {"text_data": "[1, 2]"},
        {"bytes_data": b"\x00ping"},
    ],
)
def test_system_socket_closes_on_a_message_it_does_not_know(message):
    async def run():
        communicator, connected, _ = await _ws("/ws/system/")
        assert connected
        await communicator.send_to(**message)
        error = await communicator.receive_json_from()
        closed = await communicator.receive_output()
        # A server-side close is answered with websocket.disconnect, as a server would,
        # so the consumer finishes here rather than being cancelled with the event loop.
        await communicator.disconnect(code=closed["code"])
        return error, closed

    error, closed = async_to_sync(run)()
    assert error == {"type": "error", "code": "UNKNOWN_MESSAGE"}
    assert closed == {"type": "websocket.close", "code": 4400}


@pytest.mark.parametrize(
    ("headers", "accepted"),
    [
        ([], True),  # a bot: no Origin header
        ([(b"origin", b"http://localhost:8000")], True),
        ([(b"origin", b"https://evil.example")], False),
    ],
)
def test_browser_pages_from_other_sites_cannot_open_a_socket(headers, accepted):
    async def run():
        communicator, connected, _ = await _ws("/ws/system/", headers)
        if connected:
            await communicator.disconnect()
        return connected

    assert async_to_sync(run)() is accepted


def test_unknown_websocket_paths_are_refused():
    async def run():
        communicator = WebsocketCommunicator(application, "/ws/nowhere/")
        with pytest.raises(ValueError, match="No route found"):
            await communicator.connect()

    async_to_sync(run)()


def test_the_channel_layer_round_trips_through_redis():
    layer = get_channel_layer()

    async def run():
        channel = await layer.new_channel()
        await layer.group_add("health-probe", channel)
        await layer.group_send("health-probe", {"type": "probe.message", "n": 1})
        message = await layer.receive(channel)
        await layer.group_discard("health-probe", channel)
        return message

    assert async_to_sync(run)() == {"type": "probe.message", "n": 1}
