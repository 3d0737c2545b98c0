"""The Celery application: configured from Django settings (``CELERY_*``), tasks
discovered in each app's ``tasks.py``; the retry policy those tasks share; and request
ids on the log lines of tasks.

A task sent while a request is served carries the request's id in a message header, and
the worker binds it while the task runs, so ``grep <request id>`` finds the task's lines
(Celery's own "succeeded" and "raised" among them) beside the request's. A task nobody's
request sent (the beat schedule's) runs under ``task-<task id>``.
"""

import contextlib
import os

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun

from dex.logging import request_id_bound, request_id_get

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dex.settings.local")

app = Celery("dex")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

REQUEST_ID_HEADER = "dex_request_id"
_bound: dict[str, contextlib.ExitStack] = {}  # task id -> its binding, while it runs


@before_task_publish.connect
def _send_request_id(headers: dict | None = None, **_) -> None:
    request_id = request_id_get()
    if request_id is not None and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, request_id)


@task_prerun.connect
def _bind_request_id(task_id: str | None = None, task=None, **_) -> None:
    carried = getattr(task.request, REQUEST_ID_HEADER, None) if task is not None else None
    # Run in place (``apply()``) inside a request, a task is that request's work too.
    request_id = carried or request_id_get() or f"task-{task_id}"
    binding = contextlib.ExitStack()
    binding.enter_context(request_id_bound(request_id))
    _bound[task_id] = binding


@task_postrun.connect
def _unbind_request_id(task_id: str | None = None, **_) -> None:
    binding = _bound.pop(task_id, None)
    if binding is not None:
        binding.close()


def retrying() -> dict:
    """Task options for a task that retries, with exponential backoff and jitter, the
    failures that can pass by themselves: a dropped or refused database or Redis
    connection, a serialization failure or deadlock PostgreSQL asks the client to
    retry. Anything else is a bug, and retrying a bug only repeats it.

    Tasks using it must be idempotent (they are: each writes what a period or an id
    names, once), since a retry may follow a failure that happened after the commit.
    """
    import redis
    from django.conf import settings
    from django.db import InterfaceError, OperationalError

    return {
        "autoretry_for": (
            OperationalError,  # includes SerializationFailure and DeadlockDetected
            InterfaceError,
            redis.ConnectionError,
            redis.TimeoutError,
        ),
        "retry_backoff": True,
        "retry_backoff_max": settings.CELERY_TASK_RETRY_BACKOFF_MAX,
        "retry_jitter": True,
        "max_retries": settings.CELERY_TASK_MAX_RETRIES,
    }
