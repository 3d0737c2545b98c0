"""HTTP through the served application (``dex.asgi.application``): Django's WSGI handler
on the request's thread, the body as it arrived, the response as Django made it."""

import json
import threading

import pytest
from asgiref.sync import async_to_sync
from django.core.signals import request_finished, request_started

from dex.asgi import application
from dex.request_threads import RequestThreads
from dex.wsgi_bridge import WsgiBridge
from tests.serve import http_scope, serve_once

pytestmark = pytest.mark.django_db(transaction=True)

WALLET = "0x" + "ab" * 20


@pytest.fixture
def signalled():
    """(signal, thread ident) of each request signal, in order."""
    seen: list[tuple[str, int]] = []

    def started(**kwargs) -> None:
        seen.append(("started", threading.get_ident()))

    def finished(**kwargs) -> None:
        seen.append(("finished", threading.get_ident()))

    request_started.connect(started, dispatch_uid="test-bridge-started")
    request_finished.connect(finished, dispatch_uid="test-bridge-finished")
    yield seen
    request_started.disconnect(dispatch_uid="test-bridge-started")
    request_finished.disconnect(dispatch_uid="test-bridge-finished")


def headers_of(start: dict) -> dict[bytes, list[bytes]]:
    found: dict[bytes, list[bytes]] = {}
    for name, value in start["headers"]:
        found.setdefault(name, []).append(value)
    return found


def test_a_body_in_chunks_without_a_length_reaches_the_view(signalled):
    body = json.dumps({"address": WALLET}).encode()
    scope = http_scope(
        "POST",
        "/api/v1/auth/challenge/",
        headers=[(b"content-type", b"application/json"), (b"x-request-id", b"bridge-test-1")],
    )
    start, end = serve_once(application, scope, body, chunks=3)

    assert start["status"] == 201
    assert headers_of(start)[b"content-type"] == [b"application/json"]
    assert headers_of(start)[b"x-request-id"] == [b"bridge-test-1"]
    assert WALLET in json.loads(end["body"])["message"].lower()
    assert not end.get("more_body", False)
    # Django's request signals, both on one thread: the response was closed there.
    assert [name for name, _ in signalled] == ["started", "finished"]
    assert signalled[0][1] == signalled[1][1] != threading.get_ident()


def test_a_refusal_is_the_api_s_own_json_error():
    start, end = serve_once(application, http_scope("GET", "/api/v1/orders/"))
    assert start["status"] == 401
    assert json.loads(end["body"])["code"]


def test_a_client_gone_before_its_body_arrived_runs_nothing(signalled):
    sent: list[dict] = []
    incoming = [
        {"type": "http.request", "body": b'{"address": ', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict:
        return incoming.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    async_to_sync(application)(http_scope("POST", "/api/v1/auth/challenge/"), receive, send)
    assert sent == []
    assert signalled == []


class Streamed:
    """A streaming WSGI response that notes the thread of each chunk and of its close."""

    streaming = True

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.threads: list[int] = []
        self.closed_on: int | None = None

    def __iter__(self):
        for part in self.parts:
            self.threads.append(threading.get_ident())
            yield part

    def close(self) -> None:
        self.closed_on = threading.get_ident()


def test_a_streaming_response_is_sent_chunk_by_chunk_from_the_request_thread():
    response = Streamed([b"a,b\n", b"", b"1,2\n", b"3,4\n"])
    environs: list[dict] = []

    def app(environ, start_response):
        environs.append(environ)
        start_response("200 OK", [("Content-Type", "text/csv"), ("Set-Cookie", "a=1")])
        return response

    served = RequestThreads(WsgiBridge(app), keep=1)
    headers = [(b"x-twice", b"1"), (b"x-twice", b"2"), (b"x_twice", b"3"), (b"x_api_key", b"k")]
    scope = http_scope("GET", "/x", query=b"q=1", headers=headers)
    start, *bodies = serve_once(served, scope)

    assert start == {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/csv"), (b"set-cookie", b"a=1")],
    }
    assert [b["body"] for b in bodies] == [b"a,b\n", b"1,2\n", b"3,4\n", b""]
    assert [b.get("more_body", False) for b in bodies] == [True, True, True, False]
    assert len(set(response.threads)) == 1
    assert response.closed_on == response.threads[0] != threading.get_ident()
    (environ,) = environs
    assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == ("/x", "q=1")
    assert environ["HTTP_X_TWICE"] == "1,2"  # the underscored ones are dropped
    assert "HTTP_X_API_KEY" not in environ
    assert (environ["REMOTE_ADDR"], environ["CONTENT_LENGTH"]) == ("127.0.0.1", "0")
