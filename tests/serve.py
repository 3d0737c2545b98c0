"""Driving an ASGI application in-process, as the server would, for one HTTP request."""

from __future__ import annotations

import asyncio

from asgiref.sync import async_to_sync


def http_scope(method: str, path: str, *, headers=(), query: bytes = b"") -> dict:
    """An HTTP scope as uvicorn builds it (``Host: localhost`` added)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"localhost"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }


def serve_once(app, scope: dict, body: bytes = b"", *, chunks: int = 1) -> list[dict]:
    """The messages ``app`` sends for one request whose ``body`` arrives in ``chunks``
    parts; after the body, the client waits (it never disconnects)."""
    size = -(-len(body) // chunks) if body else 0
    parts = [body[i : i + size] for i in range(0, len(body), size)] if body else [b""]
    incoming = [
        {"type": "http.request", "body": part, "more_body": n < len(parts) - 1}
        for n, part in enumerate(parts)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()  # still connected
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        await app(scope, receive, send)

    async_to_sync(run)()
    return sent
