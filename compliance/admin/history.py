"""Change history in the admin.

The history tables (``compliance.models.CHANGE_HISTORY``, written by triggers) are
listed read-only, and an object's own history page (the admin's standard "History"
button) shows its changes above the admin's log: when, what (insert, update, delete),
which fields went from what to what, and who made the change from which page when it
came through the web.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import models
from django.db.models import BigIntegerField, OuterRef, Subquery
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from compliance.models import CHANGE_HISTORY
from dex.admin import ReadOnlyAdmin

# The history tables' own columns, apart from the snapshot of the tracked row.
_EVENT_COLUMNS = {
    "pgh_id",
    "pgh_created_at",
    "pgh_label",
    "pgh_obj",
    "pgh_context",
    "pgh_context_id",
}


@dataclass(frozen=True, slots=True)
class FieldChange:
    name: str
    before: Any
    after: Any


@dataclass(slots=True)
class Change:
    """One row of an object's change history, with what it changed."""

    event: models.Model
    label: str
    user: str
    url: str
    changes: list[FieldChange] = field(default_factory=list)


def history_model_for(model: type[models.Model]) -> type[models.Model] | None:
    return CHANGE_HISTORY.get(model._meta.concrete_model)


def snapshot_fields(history: type[models.Model]) -> list[models.Field]:
    return [f for f in history._meta.concrete_fields if f.name not in _EVENT_COLUMNS]


def change_history_list(obj: models.Model) -> list[Change]:
    """``obj``'s recorded changes, newest first: each with the fields it changed (all
    of them for the insert) and the staff user and page it came from, if any."""
    history = history_model_for(type(obj))
    if history is None:
        return []
    events = list(history.objects.filter(pgh_obj_id=obj.pk).order_by("pgh_id"))
    fields = snapshot_fields(history)
    user_ids = {
        (e.pgh_context or {}).get("user") for e in events if (e.pgh_context or {}).get("user")
    }
    usernames = dict(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username"))
    rows, previous = [], None
    for event in events:
        context = event.pgh_context or {}
        user_id = context.get("user")
        row = Change(
            event=event,
            label=event.pgh_label,
            user=usernames.get(user_id, f"user #{user_id}") if user_id else "",
            url=context.get("url", ""),
        )
        for f in fields:
            after = getattr(event, f.attname)
            before = getattr(previous, f.attname) if previous is not None else None
            if previous is None or before != after:
                row.changes.append(FieldChange(f.verbose_name, before, after))
        rows.append(row)
        previous = event
    rows.reverse()
    return rows


def can_see_history(user, model: type[models.Model]) -> bool:
    history = history_model_for(model)
    return history is not None and user.has_perm(
        f"{history._meta.app_label}.view_{history._meta.model_name}"
    )


class ChangeHistoryAdmin(ReadOnlyAdmin):
    """A history table, read-only for everyone: the triggers refuse edits anyway."""

    list_display = ["pgh_created_at", "pgh_label", "tracked_object", "changed_by", "page"]
    list_filter = ["pgh_label"]
    search_fields = ["=pgh_obj_id"]
    date_hierarchy = "pgh_created_at"
    ordering = ["-pgh_created_at", "-pgh_id"]

    def get_queryset(self, request):
        user_id = Cast(KT("pgh_context__user"), BigIntegerField())
        usernames = get_user_model().objects.filter(pk=OuterRef("changed_by_id"))
        return (
            super()
            .get_queryset(request)
            .annotate(changed_by_id=user_id)
            .annotate(changed_by_name=Subquery(usernames.values("username")[:1]))
        )

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.concrete_fields]

    @admin.display(description="object")
    def tracked_object(self, event) -> str:
        tracked = self.model.pgh_tracked_model._meta
        try:
            url = reverse(
                f"admin:{tracked.app_label}_{tracked.model_name}_history", args=[event.pgh_obj_id]
            )
        except NoReverseMatch:
            return f"{tracked.verbose_name} #{event.pgh_obj_id}"
        return format_html('<a href="{}">{} #{}</a>', url, tracked.verbose_name, event.pgh_obj_id)

    @admin.display(description="by")
    def changed_by(self, event) -> str:
        if event.changed_by_id is None:
            return "—"
        return event.changed_by_name or f"user #{event.changed_by_id}"

    @admin.display(description="page")
    def page(self, event) -> str:
        return (event.pgh_context or {}).get("url", "—")


for _history in CHANGE_HISTORY.values():
    admin.site.register(_history, ChangeHistoryAdmin)
