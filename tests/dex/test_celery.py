"""The Celery app takes its configuration from Django settings and reaches its broker
(the same Redis as everything else, over TCP or the embedded Unix socket)."""

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
