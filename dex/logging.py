"""Log lines an operator can search: one format for every process, and the request id.

Every HTTP request gets an id: the client's ``X-Request-ID`` when it is well formed
(1–64 letters, digits, ``.``, ``_``, ``-``), else a fresh one. ``RequestIdMiddleware``
binds it to the context for the request's duration (so every log line written while
serving it carries it) and returns it in the response's ``X-Request-ID``. The order
services store it on the ``OrderCommand`` they write, and the matcher names it when it
commits and publishes the command's batch, so ``grep <id>`` follows an order from the
API through the matcher to its reply.

``LOG_FORMAT=json`` writes each record as one JSON object (``timestamp``, ``level``,
``logger``, ``process``, ``message``, ``request_id`` and any ``extra={...}`` context);
``plain`` writes the same fields as text, the context as ``key=value`` pairs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

if TYPE_CHECKING:  # settings import this module: it must not import Django's machinery
    from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_MAX_LENGTH = 64
_WELL_FORMED = re.compile(rf"[A-Za-z0-9._-]{{1,{REQUEST_ID_MAX_LENGTH}}}")

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

request_log = logging.getLogger("dex.request")


def request_id_get() -> str | None:
    """The id of the request being served in this context, or None outside one."""
    return _request_id.get()


def request_id_new() -> str:
    return uuid.uuid4().hex


def request_id_accept(value: str | None) -> str:
    """The client's id when it is well formed (so it cannot forge log lines or flood
    them), a fresh one otherwise."""
    if value and _WELL_FORMED.fullmatch(value):
        return value
    return request_id_new()


@contextlib.contextmanager
def request_id_bound(value: str | None) -> Iterator[None]:
    """Log lines written inside carry ``value`` as their request id."""
    token = _request_id.set(value)
    try:
        yield
    finally:
        _request_id.reset(token)


class RequestIdMiddleware:
    """Gives each request its id (``request.request_id``), binds it for the request's log
    lines and sends it back as ``X-Request-ID``. Sync and async capable, so under ASGI
    it adds no thread hop; first in ``MIDDLEWARE``, so every other layer sees the id."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        request_id = self._assign(request)
        started = time.perf_counter()
        with request_id_bound(request_id):
            response = self.get_response(request)
            _log_request(request, response, started)
        response[REQUEST_ID_HEADER] = request_id
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        request_id = self._assign(request)
        # Sync views run in a thread through asgiref, which copies this context there.
        started = time.perf_counter()
        with request_id_bound(request_id):
            response = await self.get_response(request)
            _log_request(request, response, started)
        response[REQUEST_ID_HEADER] = request_id
        return response

    @staticmethod
    def _assign(request: HttpRequest) -> str:
        request.request_id = request_id_accept(request.headers.get(REQUEST_ID_HEADER))
        return request.request_id


def _log_request(request: HttpRequest, response: HttpResponse, started: float) -> None:
    """One line a request, as it is answered (the line the id ties the rest to)."""
    request_log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )


class RequestIdFilter(logging.Filter):
    """Stamps each record with the request id bound where it was written (``-`` when none
    is), unless the caller named one itself (``extra={"request_id": ...}``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get() or "-"
        return True


# What every LogRecord has; anything else on a record came from ``extra=``: its context.
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "request_id", "taskName"}
)


def record_context(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS}


class JsonFormatter(_JsonFormatter):
    """One JSON object a line: ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``,
    ``process``, ``message``, ``request_id``, then the record's context."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("fmt", ["levelname", "name", "process", "message", "request_id"])
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", True)
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__(*args, **kwargs)


class PlainFormatter(logging.Formatter):
    """``2026-11-21 12:00:00,000 INFO exchange.matcher 4242 [<request id>] message
    key=value …``: the JSON line's fields, for a person at a terminal."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault(
            "fmt", "%(asctime)s %(levelname)s %(name)s %(process)d [%(request_id)s] %(message)s"
        )
        super().__init__(*args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get() or "-"
        line = super().format(record)
        context = record_context(record)
        if not context:
            return line
        pairs = " ".join(f"{key}={value}" for key, value in context.items())
        head, newline, trace = line.partition("\n")  # a traceback stays below the line
        return f"{head} {pairs}{newline}{trace}"


def logging_config(*, log_format: str, level: str) -> dict:
    """The ``LOGGING`` setting: one console handler in ``log_format`` (``json`` or
    ``plain``), request ids on every record."""
    if log_format not in ("json", "plain"):
        raise ValueError(f"LOG_FORMAT must be json or plain, not {log_format!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "dex.logging.RequestIdFilter"}},
        "formatters": {
            "json": {"()": "dex.logging.JsonFormatter"},
            "plain": {"()": "dex.logging.PlainFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.db.backends": {"level": "WARNING"}},
    }
