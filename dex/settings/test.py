"""The test suite: real PostgreSQL and Redis (from DATABASE_URL / REDIS_URL), a fast
password hasher, and static files served from the apps."""

from dex.settings.base import *  # noqa: F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = None  # served from the apps' static folders; no collectstatic here
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
DEMO_DATA_ALLOWED = True
