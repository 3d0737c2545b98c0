"""A developer's machine: ``make run``. DEBUG defaults to on; static files are served
straight from the apps so no collectstatic step is needed."""

from dex.logging import logging_config
from dex.settings.base import *  # noqa: F403
from dex.settings.base import env

DEBUG = env.bool("DEBUG", default=True)
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = None  # served from the apps' static folders; no collectstatic here
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
DEMO_DATA_ALLOWED = env.bool("DEMO_DATA_ALLOWED", default=True)

# Text logs at a developer's terminal; LOG_FORMAT=json to see what production writes.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)  # noqa: F405
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
