"""The test suite: real PostgreSQL and Redis (from DATABASE_URL / REDIS_URL), a fast
password hasher, and static files served from the apps."""

from dex.logging import logging_config
from dex.settings.base import *  # noqa: F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = None  # served from the apps' static folders; no collectstatic here
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
DEMO_DATA_ALLOWED = True
# The limiter runs on every API request in the suite, but most tests make many requests
# from 127.0.0.1 within a second; only the rate-limit tests set limits they can reach.
API_RATE_LIMITS = {
    scope: dict.fromkeys(("credential", "ip", "global"), (1_000_000, 1.0))
    for scope in ("default", "orders")
}
API_RATE_LIMIT_KEY_PREFIX = "dex:test:rl"
# Matchers the tests start serve metrics only where a test asks for it (a free port).
MATCHER_METRICS_PORT = env.int("MATCHER_METRICS_PORT", default=0)  # noqa: F405
MATCHER_METRICS_TARGETS = []
# Text logs, readable in a failing test's output; the logging tests ask for JSON.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")  # noqa: F405
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)  # noqa: F405
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
