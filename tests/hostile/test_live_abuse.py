"""Abusive clients against a real uvicorn web process (``tests.live.web_server``), started
once for the module with the Procfile's WebSocket frame limit:

- oversized bodies (10 MB of JSON, stated or chunked) are 413 without the process
  buffering them, and JSON nested to overflow the decoder is a 400, not a dead process;
- a 1 MB WebSocket frame closes that socket with 1009 (message too big);
- a slowloris client (headers one byte a second), hundreds of idle connections and a
  megabyte of header do not stop a normal client being answered promptly;
- a flood of hundreds of requests a second from one address, or with one API key, gets
  429 with ``Retry-After`` and ``RateLimit-*`` headers and never a 5xx, while other
  addresses and keys are served as usual.

uvicorn has no timeout for reading a request's headers: a slowloris connection stays
open as long as the client keeps trickling. It costs the process one idle socket, not a
worker, which is what these tests prove; capping such connections is the reverse
proxy's job (README, "Operations"). A WebSocket client that never reads is closed with
4509: ``tests/exchange/ws/test_stream.py`` (the slow consumer)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
import uuid

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.live import REPO, web_server

# Tests with a trader commit it, so the web process sees it.
with_trader = pytest.mark.django_db(transaction=True)
MB = 1024 * 1024
CREDENTIAL_LIMIT = 5  # per second, per API key
IP_LIMIT = 20  # per second, per address
PROMPT = 2.0  # seconds a normal request may take while the server is abused
KEEP_ALIVE = 1  # seconds; the Procfile's is 5
OPEN_ORDERS = "/api/v1/orders/open/"  # a trader's read: charged to the key's bucket


def procfile_ws_max_size() -> str:
    """The WebSocket frame limit the Procfile gives uvicorn."""
    web = (REPO / "Procfile").read_text().splitlines()[0]
    match = re.search(r"--ws-max-size \$\{WS_MAX_FRAME_BYTES:-(\d+)\}", web)
    assert match, "the Procfile's web process sets no --ws-max-size"
    return match.group(1)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """(port, pid) of a uvicorn web process on the test database."""
    with web_server(
        tmp_path_factory.mktemp("uvicorn"),
        DJANGO_SETTINGS_MODULE="tests.hostile.flood_settings",
        DB_POOL_MAX_SIZE="4",  # pooled, as the Procfile runs it
        FLOOD_CREDENTIAL_LIMIT=str(CREDENTIAL_LIMIT),
        FLOOD_IP_LIMIT=str(IP_LIMIT),
        FLOOD_KEY_PREFIX=f"dex:test:hostile:{uuid.uuid4().hex}",
        UVICORN_WS_MAX_SIZE=procfile_ws_max_size(),
        UVICORN_TIMEOUT_KEEP_ALIVE=str(KEEP_ALIVE),
        UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN="1",
    ) as port:
        web = [
            p
            for p in psutil.Process().children(recursive=True)
            if str(port) in " ".join(p.cmdline())
        ]
        assert len(web) == 1
        yield port, web[0].pid


@pytest.fixture
def port(server) -> int:
    return server[0]


def client(port: int, address: str = "127.0.0.1", **kwargs) -> httpx.Client:
    """An HTTP client whose requests come from ``address`` (any of 127.0.0.0/8)."""
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        transport=httpx.HTTPTransport(local_address=address),
        timeout=10,
        **kwargs,
    )


def answered_promptly(port: int, address: str = "127.0.0.9") -> float:
    """A normal client's request: answered 200, in how many seconds."""
    with client(port, address) as normal:
        started = time.monotonic()
        response = normal.get("/api/v1/markets/")
        elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert elapsed < PROMPT, elapsed
    return elapsed


def raw_exchange(port: int, head: bytes, body_chunks=(), timeout: float = 10) -> bytes:
    """Sends ``head`` and then as much of ``body_chunks`` as the server takes before it
    answers or closes; returns what the server sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for chunk in body_chunks:
                sock.sendall(chunk)
        received = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while data := sock.recv(65536):
                received += data
    return received


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


# --- oversized and malformed bodies ---------------------------------------------------------


@with_trader
@pytest.mark.parametrize("path", ["/api/v1/orders/", "/api/v1/orders/batch/"])
def test_ten_megabytes_of_json_is_413_without_being_buffered(server, path, funded):
    port, pid = server
    body = b'{"orders": [' + b'{"market": "ETH-USDC"},' * (10 * MB // 23) + b"{}]}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {funded.api_key}\r\n"
    ).encode()
    before = rss(pid)
    stated = raw_exchange(
        port,
        head + f"Content-Length: {len(body)}\r\n\r\n".encode(),
        (body[i : i + MB] for i in range(0, len(body), MB)),
    )
    chunked = raw_exchange(
        port,
        head + b"Transfer-Encoding: chunked\r\n\r\n",
        (b"%x\r\n%s\r\n" % (MB, body[i : i + MB]) for i in range(0, 10 * MB, MB)),
    )
    for answer in (stated, chunked):
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == "PAYLOAD_TOO_LARGE"
    assert rss(pid) - before < 5 * MB  # 20 MB were sent; nothing like it was kept
    answered_promptly(port)


@with_trader
def test_json_nested_deep_enough_to_overflow_the_decoder_is_400_and_the_server_lives(
    server, funded
):
    port, pid = server
    with client(port, headers={"X-API-Key": funded.api_key}) as api:
        response = api.post(
            "/api/v1/orders/",
            content=b"[" * 200_000,  # under the body limit
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "MALFORMED_REQUEST"
    assert psutil.pid_exists(pid)
    answered_promptly(port)


def test_a_one_megabyte_websocket_frame_closes_that_socket_with_1009(port):
    with ws_connect(f"ws://127.0.0.1:{port}/ws/stream/", max_size=None) as hostile:
        hostile.send("x" * MB)
        with pytest.raises(ConnectionClosed) as closed:
            hostile.recv(timeout=10)
    assert closed.value.rcvd.code == 1009
    with ws_connect(f"ws://127.0.0.1:{port}/ws/stream/") as normal:
        normal.send(json.dumps({"type": "ping", "id": 1}))
        assert json.loads(normal.recv(timeout=5))["type"] == "pong"


# --- slow and idle clients -------------------------------------------------------------------


def test_a_slowloris_client_does_not_hold_up_a_normal_one(port):
    head = b"GET /api/v1/markets/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: yes\r\n"
    stop = threading.Event()
    sent = []

    def trickle():
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for byte in head:
                if stop.wait(1.0):
                    return
                sock.sendall(bytes([byte]))
                sent.append(byte)

    slow = threading.Thread(target=trickle)
    slow.start()
    try:
        times = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            times.append(answered_promptly(port))
            time.sleep(0.25)
    finally:
        stop.set()
        slow.join(5)
    assert len(sent) >= 3  # the server was taking the trickle all along
    assert len(times) >= 6


def test_hundreds_of_idle_and_half_open_connections_do_not_starve_a_normal_client(port):
    sockets = []
    try:
        for n in range(300):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if n % 2:
                sock.sendall(b"GET /api/v1/markets/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sockets.append(sock)
        for _ in range(5):
            answered_promptly(port)
    finally:
        for sock in sockets:
            sock.close()


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/markets/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        while sock.recv(65536):
            pass  # the rest of the response, then the server's close
        assert time.monotonic() - started < KEEP_ALIVE + 2


def test_a_megabyte_of_header_does_not_stop_the_server(port):
    """uvicorn's default HTTP parser (httptools) puts no bound on a request's headers:
    that bound is the reverse proxy's (README, "Operations"). The process takes the
    request and goes on serving."""
    head = b"GET /api/v1/markets/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * MB + b"\r\n\r\n"
    answer = raw_exchange(port, head, timeout=KEEP_ALIVE + 5)
    assert answer.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 4")), answer[:200]
    answered_promptly(port)


# --- floods from one address or one credential -------------------------------------------


async def flood(
    port: int, address: str, count: int, path: str = "/api/v1/markets/", headers=None
) -> list[httpx.Response]:
    """``count`` requests for ``path`` at once from ``address``."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", transport=transport, limits=limits, timeout=30
    ) as hammer:
        return await asyncio.gather(*(hammer.get(path, headers=headers) for _ in range(count)))


def assert_refused_politely(
    responses: list[httpx.Response], bucket_limit: int, seconds: float
) -> None:
    """Each answer is 200 or a 429 that says when to come back; no more were served than
    the bucket's burst and what it refilled meanwhile."""
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    assert bucket_limit <= statuses.count(200) <= bucket_limit * (1 + seconds) + 1
    assert statuses.count(429) >= 1
    for refused in (r for r in responses if r.status_code == 429):
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["RateLimit-Limit"] == str(bucket_limit)
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert int(refused.headers["RateLimit-Reset"]) >= 0
        assert refused.json()["code"] == "RATE_LIMITED"


def test_a_flood_from_one_address_is_429_there_and_nowhere_else(port):
    """300 requests at once over 100 connections from one address; meanwhile another
    address's requests are served (slower, on a saturated process, but served)."""

    def served(address: str) -> int:
        with client(port, address) as other:
            return other.get("/api/v1/markets/").status_code

    async def scenario():
        others = []

        async def other_address():
            for _ in range(5):
                await asyncio.sleep(0.05)
                others.append(await asyncio.to_thread(served, "127.0.0.3"))

        started = time.monotonic()
        responses, _ = await asyncio.gather(flood(port, "127.0.0.2", 300), other_address())
        return responses, others, time.monotonic() - started

    responses, others, seconds = asyncio.run(scenario())
    assert_refused_politely(responses, IP_LIMIT, seconds)
    assert others == [200] * 5
    answered_promptly(port)  # and once the flood is over, promptly again


@with_trader
def test_a_flood_with_one_api_key_is_429_for_that_key_only(port, funded):
    from tests.api_support import key_client

    other_key = key_client(funded.account)._credentials["HTTP_X_API_KEY"]

    async def scenario():
        # Fewer than the address's limit: only the key's bucket runs out.
        started = time.monotonic()
        responses = await flood(
            port, "127.0.0.4", IP_LIMIT - 2, OPEN_ORDERS, headers={"X-API-Key": funded.api_key}
        )
        seconds = time.monotonic() - started
        with client(port, "127.0.0.4", headers={"X-API-Key": other_key}) as other:
            return responses, seconds, other.get(OPEN_ORDERS)

    responses, seconds, other = asyncio.run(scenario())
    assert_refused_politely(responses, CREDENTIAL_LIMIT, seconds)
    assert other.status_code == 200, other.text
