"""Django's HTTP side, served from the ASGI server with one thread hop per request.

The API, the admin and the pages are synchronous Django. Django's ASGI handler runs
them as an async application: request signals, the middleware chain and the view each
cross between the event loop and the request's thread (``sync_to_async`` into the
chain, ``async_to_sync`` back out of it to the async core, ``sync_to_async`` again for
the view, once more to close the response): 0.6 to 1.1 ms more CPU for a small API
request than this bridge spends (``bench/request_path.py``). ``WsgiBridge`` reads the request
body on the event loop, then runs Django's WSGI handler, whole, on the request's thread
(one ``sync_to_async``: the pooled thread ``dex.request_threads`` gives the request),
and sends the response from the event loop. The same middleware, views and signals run;
they see a ``WSGIRequest``.

- A response is read to its end on the request's thread, closed there (Django then
  sends ``request_finished`` and returns the database connection), and sent in one
  piece. A streaming response (a CSV report, a static file) is sent chunk by chunk as
  the thread produces it, each chunk handed to the event loop (``async_to_sync``), so
  what it reads from the database stays on its thread.
- The body is read before the view runs, as Django's ASGI handler reads it (kept in
  memory up to ``FILE_UPLOAD_MAX_MEMORY_SIZE``, then in a temporary file);
  ``CONTENT_LENGTH`` is what arrived, so a chunked request's body reaches the view.
  ``RequestBodyLimit`` in front refuses oversized API bodies before any of this.
- A header whose name has an underscore is dropped: in the environ it would be the
  same key as the one with a hyphen (``X-Api_Key`` as ``X-API-Key``), so a client could
  pass one off as the other (WSGI servers drop them too).
- A client that goes away before its body has arrived gets nothing and runs nothing.
  One that goes away later is not noticed until its response is sent (as a WSGI server
  behaves).
"""

from __future__ import annotations

import sys
from tempfile import SpooledTemporaryFile

from asgiref.sync import AsyncToSync, sync_to_async
from django.conf import settings


def _environ(scope: dict, body, length: int) -> dict:
    script_name = scope.get("root_path", "").encode().decode("latin1")
    path_info = scope["path"].encode().decode("latin1")
    if script_name and path_info.startswith(script_name):
        path_info = path_info[len(script_name) :]
    server = scope.get("server") or ("localhost", 80)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": scope.get("query_string", b"").decode("latin1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1] if server[1] is not None else 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "CONTENT_LENGTH": str(length),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if scope.get("client"):
        environ["REMOTE_ADDR"] = scope["client"][0]
        environ["REMOTE_PORT"] = str(scope["client"][1])
    for raw_name, raw_value in scope.get("headers", ()):
        if b"_" in raw_name:
            continue  # it would pass for the header with a hyphen
        name = raw_name.decode("latin1").upper().replace("-", "_")
        if name == "CONTENT_LENGTH":
            continue  # what arrived counts
        key = name if name == "CONTENT_TYPE" else f"HTTP_{name}"
        value = raw_value.decode("latin1")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


class WsgiBridge:
    """ASGI application for HTTP running ``wsgi_application`` (Django's ``WSGIHandler``)
    on the request's thread."""

    def __init__(self, wsgi_application) -> None:
        self.wsgi_application = wsgi_application

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"WsgiBridge serves HTTP only, not {scope['type']}")
        with SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE) as body:
            length = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                body.write(chunk)
                length += len(chunk)
                if not message.get("more_body", False):
                    break
            body.seek(0)
            environ = _environ(scope, body, length)
            response = await sync_to_async(self._run, thread_sensitive=True)(environ, send)
        if response is not None:
            start, content = response
            await send(start)
            await send({"type": "http.response.body", "body": content})

    def _run(self, environ: dict, send) -> tuple[dict, bytes] | None:
        """On the request's thread: the response's start and body, or ``None`` once a
        streaming response has been sent from here."""
        start: dict = {}

        def start_response(status: str, headers, exc_info=None) -> None:
            start["message"] = {
                "type": "http.response.start",
                "status": int(status.split(" ", 1)[0]),
                "headers": [(k.lower().encode("latin1"), v.encode("latin1")) for k, v in headers],
            }

        result = self.wsgi_application(environ, start_response)
        try:
            if not getattr(result, "streaming", False):
                return start["message"], b"".join(result)
            sync_send = AsyncToSync(send)
            sync_send(start["message"])
            for chunk in result:
                if chunk:
                    sync_send({"type": "http.response.body", "body": chunk, "more_body": True})
            sync_send({"type": "http.response.body", "body": b""})
            return None
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
