"""The Celery app takes its configuration from Django settings and reaches its broker
(the same Redis as everything else, over TCP or the embedded Unix socket)."""

import os
import re
import subprocess
import sys

from django.conf import settings

from dex import celery_app


def test_celery_is_configured_from_django_settings():
    assert celery_app.conf.broker_url == settings.CELERY_BROKER_URL
    assert celery_app.conf.task_acks_late is True
    assert celery_app.conf.worker_prefetch_multiplier == 1


def test_celery_reaches_its_broker_and_round_trips_a_message():
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        queue = connection.SimpleQueue("dex.test.broker-probe")
        try:
            queue.put({"probe": 1})
            message = queue.get(timeout=5)
            message.ack()
            assert message.payload == {"probe": 1}
        finally:
            queue.clear()
            queue.close()


def test_every_scheduled_task_is_registered_and_the_procfile_runs_worker_and_beat():
    celery_app.loader.import_default_modules()
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in celery_app.tasks, entry["task"]
    procfile = (settings.BASE_DIR / "Procfile").read_text()
    assert re.search(r"^worker: celery -A dex worker\b", procfile, re.MULTILINE)
    assert re.search(r"^beat: celery -A dex beat\b", procfile, re.MULTILINE)


def test_the_schedule_intervals_come_from_the_environment():
    env = {
        **os.environ,
        "ORDERBOOK_SNAPSHOT_INTERVAL": "7",
        "PORTFOLIO_SNAPSHOT_INTERVAL": "900",
        "PORTFOLIO_DAILY_SNAPSHOT_AT": "01:30",
    }
    script = (
        "from django.conf import settings as s; b = s.CELERY_BEAT_SCHEDULE;"
        "print(b['orderbook-snapshots']['schedule'], b['portfolio-snapshots']['schedule'],"
        " sorted(b['portfolio-snapshots-daily']['schedule'].hour),"
        " sorted(b['portfolio-snapshots-daily']['schedule'].minute))"
    )
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {script}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == ["7.0", "900.0", "[1]", "[30]"]
