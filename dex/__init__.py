"""DEX exchange-operations platform: Django project package (settings, ASGI, Celery, URLs)."""

from dex.celery import app as celery_app

__all__ = ("celery_app",)
