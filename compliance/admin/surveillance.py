"""Surveillance in the back office: the alert queue, an alert's page (its evidence as
tables linked to the orders, trades and accounts, its notes and audit trail) with the
triage steps, and the on-demand run. Every step goes through
``compliance.services.alerts`` as the staff member who took it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from compliance import tasks
from compliance.models import AlertStatus, SurveillanceAlert
from compliance.services import alerts
from compliance.services.audit import Actor
from compliance.surveillance import runner, selectors
from compliance.surveillance.findings import iso

TRIAGE_PERMISSION = "compliance.triage_alert"
RUN_PERMISSION = "compliance.run_surveillance"


# --------------------------------------------------------------------------------------
# Forms
# --------------------------------------------------------------------------------------


class TriageForm(forms.Form):
    """One triage step from the alert's page: which, and what it needs."""

    ASSIGN_TO_ME = "assign_to_me"
    ASSIGN = "assign"
    NOTE = "note"
    ESCALATE = "escalate"
    CLOSE_FALSE_POSITIVE = "close_false_positive"
    CLOSE_REPORTED = "close_reported"
    STEPS = [
        (ASSIGN_TO_ME, "Assign to me"),
        (ASSIGN, "Assign to…"),
        (NOTE, "Add note"),
        (ESCALATE, "Escalate"),
        (CLOSE_FALSE_POSITIVE, "Close as false positive"),
        (CLOSE_REPORTED, "Close as reported"),
    ]

    step = forms.ChoiceField(choices=STEPS)
    assignee = forms.ModelChoiceField(queryset=None, required=False)
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["assignee"].queryset = selectors.triage_staff()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("step") == self.ASSIGN and data.get("assignee") is None:
            self.add_error("assignee", "Choose whom to assign the alert to.")
        return data


class RunForm(forms.Form):
    since = forms.DateTimeField(
        help_text="UTC; the run scans the complete scan windows from here…",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    until = forms.DateTimeField(
        help_text="…to here (windows still running are left to the scheduled scan).",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    markets = forms.ModelMultipleChoiceField(
        queryset=runner.watched_markets(),
        required=False,
        help_text="None chosen: every market.",
        widget=forms.CheckboxSelectMultiple,
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None:
            try:
                data["windows"] = alerts.surveillance_windows(since=since, until=until)
            except alerts.AlertRefused as exc:
                raise forms.ValidationError(exc.message, code=exc.code) from None
        return data


# --------------------------------------------------------------------------------------
# The queue and the alert's page
# --------------------------------------------------------------------------------------


class AssignedFilter(admin.SimpleListFilter):
    title = "assigned"
    parameter_name = "assigned"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("me", "To me"), ("nobody", "To nobody")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "me":
            return queryset.filter(assignee=request.user)
        if self.value() == "nobody":
            return queryset.filter(assignee__isnull=True)
        return queryset


@admin.register(SurveillanceAlert)
class SurveillanceAlertAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "severity",
        "status",
        "market",
        "account_link",
        "assignee",
        "window_start",
        "created_at",
    ]
    list_display_links = ["id", "kind"]
    list_filter = ["status", "kind", "severity", AssignedFilter, "market", "created_at"]
    search_fields = ["=id", "summary", "dedupe_key", "account__wallet_address", "account__label"]
    date_hierarchy = "created_at"
    list_select_related = ["market", "account", "assignee"]
    ordering = ["-created_at", "-id"]
    actions = ["assign_to_me"]
    change_list_template = "admin/compliance/surveillancealert/alert_list.html"

    # Alerts are raised by the detectors and move only through the triage services.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_triage_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(TRIAGE_PERMISSION)

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_PERMISSION)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return selectors.alert_queue()

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path("run/", wrap(self.run_view), name="{}_{}_run".format(*info)),
            path(
                "<path:object_id>/triage/",
                wrap(self.triage_view),
                name="{}_{}_triage".format(*info),
            ),
            *super().get_urls(),
        ]

    @admin.display(description="Account", ordering="account")
    def account_link(self, alert: SurveillanceAlert) -> str:
        if alert.account_id is None:
            return "—"
        url = reverse("admin:exchange_account_change", args=[alert.account_id])
        return format_html('<a href="{}">{}</a>', url, alert.account)

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_run": self.has_run_permission(request)}
        return super().changelist_view(request, extra_context)

    @admin.action(description="Assign the selected alerts to me", permissions=["triage"])
    def assign_to_me(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = Actor.from_request(request)
        done = 0
        for alert in queryset.order_by("pk"):
            if alert.assignee_id == request.user.pk:
                continue
            try:
                alerts.alert_assign(actor=actor, alert=alert, assignee=request.user)
            except alerts.AlertRefused as exc:
                self.message_user(request, f"Alert #{alert.pk}: {exc.message}", messages.WARNING)
            else:
                done += 1
        self.message_user(request, f"{done} alert(s) assigned to you.", messages.SUCCESS)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        """The alert's page: read-only, with the triage steps for those who may take
        them (there is no form to edit an alert)."""
        alert = self._alert(request, object_id)
        return self._alert_page(request, alert, TriageForm())

    def _alert(self, request: HttpRequest, object_id: str) -> SurveillanceAlert:
        alert = self.get_object(request, unquote(object_id))
        if alert is None:
            raise Http404("No such alert.")
        if not self.has_view_permission(request, alert):
            raise PermissionDenied
        return alert

    def _alert_page(
        self, request: HttpRequest, alert: SurveillanceAlert, form: TriageForm, status: int = 200
    ) -> HttpResponse:
        can_triage = self.has_triage_permission(request)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": alert,
            "title": str(alert),
            "alert": alert,
            "is_open": alert.status in (AlertStatus.OPEN, AlertStatus.ESCALATED),
            "can_escalate": alert.status == AlertStatus.OPEN,
            "evidence": evidence_tables(alert.evidence),
            "notes": selectors.alert_notes(alert=alert),
            "audit_events": selectors.alert_audit_events(alert=alert),
            "can_triage": can_triage,
            "form": form if can_triage else None,
            "triage_url": reverse(
                "admin:compliance_surveillancealert_triage", args=[quote(alert.pk)]
            ),
        }
        return TemplateResponse(
            request, "admin/compliance/surveillancealert/alert_detail.html", context, status=status
        )

    def triage_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        alert = self._alert(request, object_id)
        if not self.has_triage_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseRedirect(self._alert_url(alert))
        form = TriageForm(request.POST)
        if not form.is_valid():
            return self._alert_page(request, alert, form, status=400)
        step, note = form.cleaned_data["step"], form.cleaned_data["note"]
        actor = Actor.from_request(request)
        try:
            done = self._take(step, actor, alert, note, form.cleaned_data["assignee"], request)
        except alerts.AlertRefused as exc:
            form.add_error(None, exc.message)
            return self._alert_page(request, alert, form, status=409)
        self.message_user(request, done, messages.SUCCESS)
        return HttpResponseRedirect(self._alert_url(alert))

    @staticmethod
    def _take(step, actor, alert, note, assignee, request) -> str:
        if step == TriageForm.ASSIGN_TO_ME:
            alerts.alert_assign(actor=actor, alert=alert, assignee=request.user)
            return f"Alert #{alert.pk} is assigned to you."
        if step == TriageForm.ASSIGN:
            alerts.alert_assign(actor=actor, alert=alert, assignee=assignee)
            return f"Alert #{alert.pk} is assigned to {assignee.get_username()}."
        if step == TriageForm.NOTE:
            alerts.alert_note(actor=actor, alert=alert, body=note)
            return f"Note added to alert #{alert.pk}."
        if step == TriageForm.ESCALATE:
            alerts.alert_escalate(actor=actor, alert=alert, note=note)
            return f"Alert #{alert.pk} is escalated."
        resolution = (
            AlertStatus.FALSE_POSITIVE
            if step == TriageForm.CLOSE_FALSE_POSITIVE
            else AlertStatus.REPORTED
        )
        closed = alerts.alert_close(actor=actor, alert=alert, resolution=resolution, note=note)
        return f"Alert #{alert.pk} is closed: {closed.get_status_display()}."

    def _alert_url(self, alert: SurveillanceAlert) -> str:
        return reverse("admin:compliance_surveillancealert_change", args=[quote(alert.pk)])

    # --- the on-demand run ------------------------------------------------------------

    def run_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_run_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = RunForm(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                markets = list(data["markets"])
                windows = data["windows"]
                tasks.surveillance_run.delay(
                    request.user.pk,
                    Actor.from_request(request).ip_address,
                    windows[0].start.isoformat(),
                    windows[-1].end.isoformat(),
                    [m.pk for m in markets] if markets else None,
                )
                self.message_user(
                    request,
                    f"Surveillance run started over {len(windows)} window(s) from "
                    f"{iso(windows[0].start)} to {iso(windows[-1].end)} in "
                    f"{', '.join(m.symbol for m in markets) if markets else 'every market'}. "
                    "New alerts appear in the queue.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:compliance_surveillancealert_changelist")
                )
        else:
            now = timezone.now().replace(microsecond=0)
            form = RunForm(initial={"since": now - timedelta(hours=1), "until": now})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Run surveillance",
            "form": form,
        }
        return TemplateResponse(
            request,
            "admin/compliance/surveillancealert/alert_run.html",
            context,
            status=400 if form.is_bound else 200,
        )


# --------------------------------------------------------------------------------------
# Evidence, as the alert's page shows it
# --------------------------------------------------------------------------------------

ORDER_COLUMNS = [
    ("id", "Order"),
    ("account_id", "Account"),
    ("side", "Side"),
    ("price", "Price"),
    ("quantity", "Quantity"),
    ("filled", "Filled"),
    ("status", "Status"),
    ("reason", "Reason"),
    ("created_at", "Placed"),
    ("done_at", "Done"),
    ("lifetime_seconds", "Lived (s)"),
    ("distance_bps", "From last trade (bps)"),
]
TRADE_COLUMNS = [
    ("id", "Trade"),
    ("sequence", "Seq."),
    ("buyer_id", "Buyer"),
    ("seller_id", "Seller"),
    ("aggressor_side", "Aggressor"),
    ("price", "Price"),
    ("quantity", "Quantity"),
    ("notional", "Notional"),
    ("executed_at", "Executed"),
    ("maker_order_id", "Maker order"),
    ("taker_order_id", "Taker order"),
]
HISTORY_COLUMNS = [
    ("window_start", "Window"),
    ("quantity", "Quantity"),
    ("notional", "Notional"),
    ("trades", "Trades"),
    ("close", "Close"),
    ("return_bps", "Return (bps)"),
]
LINKS = {
    "id": None,  # set per table
    "account_id": "admin:exchange_account_change",
    "buyer_id": "admin:exchange_account_change",
    "seller_id": "admin:exchange_account_change",
    "maker_order_id": "admin:exchange_order_change",
    "taker_order_id": "admin:exchange_order_change",
}


def _link(route: str | None, value: Any) -> str | None:
    if route is None or value is None:
        return None
    try:
        return reverse(route, args=[value])
    except NoReverseMatch:
        return None


def _table(rows: list[dict], columns: list[tuple[str, str]], id_route: str | None) -> dict:
    present = [(key, label) for key, label in columns if any(key in row for row in rows)]
    routes = {**LINKS, "id": id_route}
    return {
        "headers": [label for _, label in present],
        "rows": [
            [
                {"value": row.get(key), "url": _link(routes.get(key), row.get(key))}
                for key, _ in present
            ]
            for row in rows
        ],
    }


def evidence_tables(evidence: dict) -> dict:
    """The evidence JSON as labelled figures and tables of rows with admin links."""
    return {
        "detector": evidence.get("detector", ""),
        "figures": sorted((evidence.get("figures") or {}).items()),
        "thresholds": sorted((evidence.get("thresholds") or {}).items()),
        "owner": evidence.get("owner"),
        "accounts": [
            {**a, "url": _link("admin:exchange_account_change", a.get("id"))}
            for a in evidence.get("accounts") or []
        ],
        "orders": _table(
            evidence.get("orders") or [], ORDER_COLUMNS, "admin:exchange_order_change"
        ),
        "trades": _table(
            evidence.get("trades") or [], TRADE_COLUMNS, "admin:exchange_trade_change"
        ),
        "window": evidence.get("window"),
        "history": _table(evidence.get("history") or [], HISTORY_COLUMNS, None),
    }
