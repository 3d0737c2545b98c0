"""Admin building blocks shared by every app."""

from django.contrib import admin
from django.http import HttpRequest

from compliance.services.audit import Actor
from compliance.services.records import record_delete, record_save


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: staff may look, never add, edit or delete. For history and for rows
    that change only through services."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class AuditedAdmin(admin.ModelAdmin):
    """Every save and delete goes through ``compliance.services.records``, which writes
    the audit record of the change in its transaction."""

    def save_model(self, request: HttpRequest, obj, form, change) -> None:
        record_save(actor=Actor.from_request(request), record=obj)

    def delete_model(self, request: HttpRequest, obj) -> None:
        record_delete(actor=Actor.from_request(request), record=obj)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        actor = Actor.from_request(request)
        for record in queryset.order_by("pk"):
            record_delete(actor=actor, record=record)
