"""Settings come from the environment, and production refuses unsafe ones."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from dex.settings.services import redis_settings

BASE_DIR = Path(__file__).resolve().parents[2]
GOOD_SECRET = "k3Jq9-" * 10
GOOD_SALT = "s4Lt-" * 8


def import_settings(module: str, **env: str) -> subprocess.CompletedProcess:
    base_env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DEBUG", "SECRET_KEY", "KYC_DOCUMENT_SALT", "DJANGO_SETTINGS_MODULE"}
    }
    return subprocess.run(
        [sys.executable, "-c", f"import {module} as s; print('DEBUG', s.DEBUG)"],
        env=base_env | env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": "django-insecure-" + "x" * 60}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": GOOD_SECRET, "DEBUG": "1"}, "DEBUG must be off"),
        ({"SECRET_KEY": GOOD_SECRET}, "KYC_DOCUMENT_SALT must be set"),
        ({"SECRET_KEY": GOOD_SECRET, "KYC_DOCUMENT_SALT": "short"}, "KYC_DOCUMENT_SALT must be"),
    ],
)
def test_production_refuses_to_start_with_unsafe_settings(env, message):
    result = import_settings("dex.settings.production", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_production_starts_with_a_real_secret_and_debug_off():
    result = import_settings(
        "dex.settings.production", SECRET_KEY=GOOD_SECRET, KYC_DOCUMENT_SALT=GOOD_SALT
    )
    assert result.returncode == 0, result.stderr
    assert "DEBUG False" in result.stdout


def test_local_settings_default_to_debug_and_follow_the_environment():
    assert "DEBUG True" in import_settings("dex.settings.local").stdout
    assert "DEBUG False" in import_settings("dex.settings.local", DEBUG="0").stdout


def test_settings_need_a_database_url():
    result = subprocess.run(
        [sys.executable, "-c", "import dex.settings.local"],
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


@pytest.mark.parametrize(
    ("url", "channels", "celery"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (
            "unix:///tmp/r/redis.socket?db=2",
            "unix:///tmp/r/redis.socket?db=2",
            "redis+socket:///tmp/r/redis.socket?virtual_host=2",
        ),
    ],
)
def test_one_redis_url_configures_every_client(url, channels, celery):
    derived = redis_settings(url)
    assert derived.channels_host == {
        "address": channels,
        "socket_timeout": 15.0,
        "max_connections": 1000,
    }
    assert derived.celery_url == celery


def test_the_channel_layer_outwaits_its_own_blocking_reads():
    # An idle channel's receive blocks in Redis for brpop_timeout; a socket timeout no
    # longer than that fails the read and closes the WebSocket waiting on it.
    host = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
    assert host["socket_timeout"] > RedisChannelLayer.brpop_timeout


def test_an_unknown_redis_scheme_is_a_clear_error():
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL must start with"):
        redis_settings("http://127.0.0.1:6379")
