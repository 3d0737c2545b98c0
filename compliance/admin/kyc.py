"""KYC review in the admin: the queue of cases, and each case's page with its documents
(metadata only, read-only), the account, the account's earlier cases, and the review
steps (start review, approve at a tier, reject, ask for more information), each taken
through ``compliance.services.kyc`` as the signed-in staff user.

Cases change only through those steps, which need ``compliance.review_kyc``: the case
page itself edits nothing.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from compliance.models import KycCase, KycDocument, KycStatus
from compliance.services.audit import Actor
from compliance.services.kyc import (
    KycError,
    kyc_case_approve,
    kyc_case_reject,
    kyc_case_request_info,
    kyc_case_start_review,
)
from dex.admin import ReadOnlyAdmin

REVIEW_PERMISSION = "compliance.review_kyc"


class KycDocumentInline(admin.TabularInline):
    model = KycDocument
    fields = ["document_type", "issuing_country", "expires_on", "number_hash", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def _review_step(request: HttpRequest, case: KycCase, step: str) -> KycCase:
    """Take ``step`` on ``case`` with the form's tier and notes, as the request's user."""
    actor = Actor.from_request(request)
    notes = request.POST.get("notes", "")
    if step == "start_review":
        return kyc_case_start_review(actor=actor, case=case)
    if step == "approve":
        tier = request.POST.get("tier", "").strip()
        if not (tier.isascii() and tier.isdigit()):
            raise KycError(f"give the tier to approve as a whole number, not {tier!r}")
        return kyc_case_approve(actor=actor, case=case, tier=int(tier), notes=notes)
    if step == "reject":
        return kyc_case_reject(actor=actor, case=case, notes=notes)
    if step == "request_info":
        return kyc_case_request_info(actor=actor, case=case, notes=notes)
    raise KycError(f"unknown review step {step!r}")


@admin.register(KycCase)
class KycCaseAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "account",
        "status",
        "requested_tier",
        "approved_tier",
        "country",
        "created_at",
        "reviewer",
    ]
    list_filter = ["status", "requested_tier", "approved_tier", "country"]
    search_fields = ["=id", "account__wallet_address", "account__label"]
    date_hierarchy = "created_at"
    list_select_related = ["account", "reviewer"]
    ordering = ["created_at", "id"]  # the queue: oldest first
    inlines = [KycDocumentInline]
    fields = [
        "status",
        "account_summary",
        "requested_tier",
        "country",
        "approved_tier",
        "reviewer",
        "reviewer_notes",
        "decided_at",
        "created_at",
        "updated_at",
        "earlier_cases",
    ]
    readonly_fields = fields
    change_form_template = "admin/compliance/kyccase/change_form.html"
    object_history_template = "admin/compliance/change_history.html"
    actions = ["start_review"]

    def has_review_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REVIEW_PERMISSION)

    @admin.display(description="account")
    def account_summary(self, case: KycCase) -> str:
        account = case.account
        return format_html(
            '<a href="{}">{}</a><br>status {}, KYC tier {}, country {}',
            reverse("admin:exchange_account_change", args=[account.pk]),
            account.wallet_address,
            account.status,
            account.kyc_tier,
            account.country or "not declared",
        )

    @admin.display(description="earlier cases of the account")
    def earlier_cases(self, case: KycCase) -> str:
        earlier = (
            KycCase.objects.filter(account_id=case.account_id)
            .exclude(pk=case.pk)
            .order_by("-created_at", "-id")
        )
        if not earlier:
            return "none"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                '<li><a href="{}">#{}</a> {} — asked tier {}{}, {}</li>',
                (
                    (
                        reverse("admin:compliance_kyccase_change", args=[c.pk]),
                        c.pk,
                        c.created_at.date().isoformat(),
                        c.requested_tier,
                        f", granted {c.approved_tier}" if c.approved_tier is not None else "",
                        c.get_status_display(),
                    )
                    for c in earlier
                ),
            ),
        )

    @admin.action(description="Start review of the selected cases", permissions=["review"])
    def start_review(self, request: HttpRequest, queryset) -> None:
        for case in queryset.filter(status=KycStatus.SUBMITTED).order_by("pk"):
            self._take(request, case, "start_review")

    def _take(self, request: HttpRequest, case: KycCase, step: str) -> None:
        try:
            case = _review_step(request, case, step)
        except KycError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"KYC case #{case.pk} is now {case.get_status_display()}.")

    def get_urls(self):
        return [
            path(
                "<path:object_id>/review/",
                self.admin_site.admin_view(require_POST(self.review_view)),
                name="compliance_kyccase_review",
            ),
            *super().get_urls(),
        ]

    def review_view(self, request: HttpRequest, object_id: str):
        if not self.has_review_permission(request):
            raise PermissionDenied
        case = self.get_object(request, unquote(object_id))
        if case is None:
            raise Http404("no such KYC case")
        self._take(request, case, request.POST.get("step", ""))
        return HttpResponseRedirect(
            reverse("admin:compliance_kyccase_change", args=[quote(case.pk)])
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_review": self.has_review_permission(request),
            "review_url": reverse("admin:compliance_kyccase_review", args=[object_id]),
            "KycStatus": KycStatus,
        }
        return super().change_view(request, object_id, form_url, extra_context)
