"""A lean WebSocket client for the benches' subscribers: the ``websockets`` package's
Sans-I/O protocol (``websockets.client.ClientProtocol``: the handshake, framing,
masking, permessage-deflate and closing its own asyncio client uses) driven from an
asyncio protocol, each text message handed to a callback as soon as it is parsed.

The subscribers run on the machine they measure, so what they spend is taken from the
server. ``websockets``' asyncio client runs a reader task per connection and wakes the
reading task for every message: with 1,000 subscribers the bench's clients took as
much CPU as the web processes they measured. Here a socket's bytes are parsed in
``data_received`` and every message in them is handled there, with no task switch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

ABNORMAL_CLOSURE = 1006  # the connection ended without a close frame


class Connection(asyncio.Protocol):
    def __init__(
        self, uri: str, on_text: Callable[[str], None], *, deflate: bool, max_size: int
    ) -> None:
        extensions = enable_client_permessage_deflate(None) if deflate else None
        self.protocol = ClientProtocol(parse_uri(uri), extensions=extensions, max_size=max_size)
        self.on_text = on_text
        loop = asyncio.get_running_loop()
        self.opened = loop.create_future()
        self.closed = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.fragments: list[bytes] = []

    @property
    def close_code(self) -> int | None:
        """``None`` while open; the close frame's code, or 1006 without one."""
        if not self.closed.done():
            return None
        code = self.protocol.close_code
        return ABNORMAL_CLOSURE if code is None else code

    def send(self, text: str) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_text(text.encode())
            self._flush()

    async def close(self, timeout: float = 10.0) -> None:
        if self.closed.done():
            return
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._handle()

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._handle()
        return False

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed while opening: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _handle(self) -> None:
        for event in self.protocol.events_received():
            if not isinstance(event, Frame):  # the handshake's response
                if self.opened.done():
                    continue
                if self.protocol.handshake_exc is not None:
                    self.opened.set_exception(self.protocol.handshake_exc)
                else:
                    self.opened.set_result(None)
            elif event.opcode is Opcode.TEXT and event.fin:
                self.on_text(event.data.decode())
            elif event.opcode in (Opcode.TEXT, Opcode.CONT):
                self.fragments.append(event.data)
                if event.fin:
                    data, self.fragments = b"".join(self.fragments), []
                    self.on_text(data.decode())
        self._flush()

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
        if self.protocol.state is State.CLOSED:
            self.transport.close()


async def connect(
    uri: str,
    on_text: Callable[[str], None],
    *,
    deflate: bool = False,
    max_size: int = 2**20,
    open_timeout: float = 120.0,
) -> Connection:
    """An open connection to ``uri`` (``ws://`` only); ``on_text(message)`` is called
    for every text message, on the event loop."""
    target = parse_uri(uri)
    loop = asyncio.get_running_loop()
    _, connection = await asyncio.wait_for(
        loop.create_connection(
            lambda: Connection(uri, on_text, deflate=deflate, max_size=max_size),
            target.host,
            target.port,
        ),
        open_timeout,
    )
    try:
        await asyncio.wait_for(asyncio.shield(connection.opened), open_timeout)
    except BaseException:
        connection.transport.close()
        raise
    return connection
