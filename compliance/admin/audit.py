"""The audit trail in the admin: read-only for everyone (the table's triggers refuse
updates and deletes anyway), searchable, and each event's page shows the object's
state before and after side by side."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join

from compliance.models import AuditEvent
from dex.admin import ReadOnlyAdmin


def _shown(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, dict | list):
        return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False)
    return str(value)


def before_after_rows(before: dict | None, after: dict | None) -> list[tuple[str, str, str, bool]]:
    """(field, before, after, changed) for every field either side names, in the order
    they were recorded."""
    before, after = before or {}, after or {}
    names = list(dict.fromkeys([*before, *after]))
    return [
        (
            name,
            _shown(before.get(name)) if name in before else "",
            _shown(after.get(name)) if name in after else "",
            before.get(name) != after.get(name),
        )
        for name in names
    ]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_label", "action", "target", "reason_short", "ip_address"]
    list_filter = ["action", "target_type", "actor_label"]
    search_fields = ["target_repr", "=target_id", "actor_label", "action", "reason"]
    date_hierarchy = "created_at"
    list_select_related = ["actor"]
    fields = [
        "created_at",
        "actor",
        "actor_label",
        "ip_address",
        "action",
        "target",
        "reason",
        "before_and_after",
    ]
    readonly_fields = fields

    @admin.display(description="target")
    def target(self, event: AuditEvent) -> str:
        app_label, _, model_name = event.target_type.partition(".")
        try:
            url = reverse(f"admin:{app_label}_{model_name}_change", args=[event.target_id])
        except NoReverseMatch:
            return f"{event.target_type} #{event.target_id} {event.target_repr}"
        return format_html('<a href="{}">{}</a>', url, event.target_repr)

    @admin.display(description="reason")
    def reason_short(self, event: AuditEvent) -> str:
        return event.reason if len(event.reason) <= 60 else event.reason[:59] + "…"

    @admin.display(description="before → after")
    def before_and_after(self, event: AuditEvent) -> str:
        rows = before_after_rows(event.before, event.after)
        if not rows:
            return "—"
        body = format_html_join(
            "",
            '<tr class="{}"><th scope="row">{}</th><td><pre>{}</pre></td>'
            "<td><pre>{}</pre></td></tr>",
            (("changed" if changed else "same", name, b, a) for name, b, a, changed in rows),
        )
        return format_html(
            "<style>.audit-before-after tr.changed {{ background: #fff3cd; }}</style>"
            '<table class="audit-before-after"><thead><tr><th>field</th><th>before</th>'
            "<th>after</th></tr></thead><tbody>{}</tbody></table>",
            body,
        )
