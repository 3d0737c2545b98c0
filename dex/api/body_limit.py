"""Oversized API requests are refused at the door.

Django's ASGI handler reads a request's whole body (into memory, then a temporary
file) before any view runs, so on its own a client could make every web process store
gigabytes before the API's parser gets to say 413. This ASGI middleware answers 413 for
an ``/api/`` request whose ``Content-Length`` is over ``DATA_UPLOAD_MAX_MEMORY_SIZE``
without reading it, and reads a body of unstated length (chunked) only up to that limit.
"""

from __future__ import annotations

import json

from django.conf import settings

from dex.api.errors import error_body

API_PREFIX = "/api/"


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


async def _too_large(send) -> None:
    body = json.dumps(error_body("PAYLOAD_TOO_LARGE", "the request body is too large")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestBodyLimit:
    """ASGI middleware: ``RequestBodyLimit(app)``. Only HTTP requests under ``/api/``
    (JSON only, never file uploads) are limited."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if scope["type"] != "http" or limit is None or not scope["path"].startswith(API_PREFIX):
            return await self.app(scope, receive, send)
        length = _content_length(scope)
        if length is not None:
            if length > limit:
                return await _too_large(send)
            # The server holds the client to the length it stated.
            return await self.app(scope, receive, send)
        received, size = [], 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break  # the client went away; the app hears it too
            size += len(message.get("body", b""))
            if size > limit:
                return await _too_large(send)
            if not message.get("more_body", False):
                break
        pending = iter(received)

        async def replay():
            return next(pending, None) or await receive()

        return await self.app(scope, replay, send)
