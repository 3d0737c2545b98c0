"""Reads for the alert queue and an alert's page."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db.models import Q, QuerySet

from compliance.models import AlertNote, AuditEvent, SurveillanceAlert


def alert_queue() -> QuerySet[SurveillanceAlert]:
    return SurveillanceAlert.objects.select_related("market", "account", "assignee")


def alert_notes(*, alert: SurveillanceAlert) -> QuerySet[AlertNote]:
    return alert.notes.select_related("author").order_by("created_at", "id")


def alert_audit_events(*, alert: SurveillanceAlert) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(
        target_type=alert._meta.label_lower, target_id=str(alert.pk)
    ).order_by("created_at", "id")


def triage_staff() -> QuerySet:
    """Active staff who may triage alerts (directly, through a group, or superusers):
    whom an alert can be assigned to."""
    permission = Permission.objects.filter(
        content_type__app_label="compliance", codename="triage_alert"
    ).first()
    allowed = Q(is_superuser=True)
    if permission is not None:
        allowed |= Q(user_permissions=permission) | Q(groups__permissions=permission)
    User = get_user_model()
    return (
        User.objects.filter(allowed, is_active=True, is_staff=True)
        .distinct()
        .order_by(User.USERNAME_FIELD)
    )
