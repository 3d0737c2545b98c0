"""A developer's machine: ``make run``. DEBUG defaults to on; static files are served
straight from the apps so no collectstatic step is needed."""

from dex.settings.base import *  # noqa: F403
from dex.settings.base import env

DEBUG = env.bool("DEBUG", default=True)
WHITENOISE_USE_FINDERS = True
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
DEMO_DATA_ALLOWED = env.bool("DEMO_DATA_ALLOWED", default=True)
