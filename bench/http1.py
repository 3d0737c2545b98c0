"""A lean HTTP/1.1 keep-alive client for the benches' load: asyncio protocols parsed by
``httptools`` (the parser uvicorn serves with, already installed with it).

The load runs on the machine it measures, so what the clients spend is taken from the
server. ``httpx`` spent 4.8 ms of CPU a request in ``bench/api.py``'s closed loop and
6.5 ms in its open loop (its connection pool rescans every waiting request whenever one
joins or ends), as much as the web processes spent serving it. Here a request is one
``transport.write`` of bytes built once, and its answer is parsed in C.

One request at a time per connection (no pipelining), ``connections`` at most; a request
that finds them all busy waits in a queue for the first one free. A connection the
server closes is replaced when next needed; a request whose connection breaks raises
``ConnectionError`` (the benches count it as an outcome).
"""

from __future__ import annotations

import asyncio
import collections
from urllib.parse import urlsplit

import httptools


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.chunks: list[bytes] = []
        self.open = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"unparsable response: {exc}"))
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.open = False
        self._fail(ConnectionError(f"connection lost: {exc!r}"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.chunks)))
        if not self.parser.should_keep_alive():
            self.open = False
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        self.chunks = []
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


class Client:
    """``async with Client(base_url, connections) as client: await client.post(...)``."""

    def __init__(self, base_url: str, connections: int, *, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.authority = parts.netloc.encode()
        self.limit = connections
        self.timeout = timeout
        self.opened = 0
        self.idle: list[_Connection] = []
        self.waiting: collections.deque[asyncio.Future] = collections.deque()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for connection in self.idle:
            connection.transport.close()
        self.idle.clear()

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """``(status, body)`` of the answer to ``POST path``."""
        head = [f"POST {path} HTTP/1.1", f"Host: {self.authority.decode()}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        connection = await self._acquire()
        try:
            async with asyncio.timeout(self.timeout):
                return await connection.send(raw)
        except BaseException:
            connection.open = False
            if connection.transport is not None:
                connection.transport.close()
            raise
        finally:
            self._release(connection)

    async def _acquire(self) -> _Connection:
        while self.idle:
            connection = self.idle.pop()
            if connection.open:
                return connection
            self.opened -= 1
        if self.opened >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self.waiting.append(waiter)
            try:
                connection = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release(waiter.result())  # handed over as we were cancelled
                raise
            if connection is not None:
                return connection
        self.opened += 1  # a new one: under the limit, or in place of one that closed
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                _Connection, self.host, self.port
            )
        except BaseException:
            self.opened -= 1
            self._wake(None)
            raise
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.open:
            if not self._wake(connection):
                self.idle.append(connection)
        else:
            self.opened -= 1
            self._wake(None)  # a waiter opens a new one

    def _wake(self, connection: _Connection | None) -> bool:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return True
        return False
