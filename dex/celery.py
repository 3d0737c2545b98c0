"""The Celery application: configured from Django settings (``CELERY_*``), tasks
discovered in each app's ``tasks.py``; and the retry policy those tasks share."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dex.settings.local")

app = Celery("dex")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


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
