"""Market controls in the admin: halt, resume and cancel-all (each confirmed with a
reason), the fees-and-limits form, and the venue overview.

A listed market's fees, minimums and price band change only through the rules form
(a SET_RULES command the matcher applies in journal order), never by editing the row;
its tick and lot size never change.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path

from compliance.admin.accounts import BackOfficePermissions
from compliance.admin.views import (
    Control,
    control_action,
    control_view,
    market_rules_view,
    venue_overview_view,
)
from compliance.services.markets import (
    market_cancel_all_orders,
    market_halt_request,
    market_resume_request,
)
from exchange.models import MARKET_RULE_FIELDS, Market

MARKET_CONTROLS = {
    control.name: control
    for control in (
        Control(
            name="halt",
            verb="Halt",
            done="halt sent to the matcher for",
            permission="compliance.control_market",
            explanation="The matcher stops accepting orders and amends in the market; the "
            "book stays, and cancels and expiries still apply. The market shows HALTED once "
            "the matcher has applied the halt.",
            service=market_halt_request,
            target="market",
        ),
        Control(
            name="resume",
            verb="Resume",
            done="resume sent to the matcher for",
            permission="compliance.control_market",
            explanation="The matcher accepts orders in the market again, on the book it kept.",
            service=market_resume_request,
            target="market",
        ),
        Control(
            name="cancel_orders",
            verb="Cancel every order in",
            done="cancel of every order sent to the matcher for",
            permission="compliance.cancel_orders",
            explanation="Every trader's open order in the market is cancelled by the matcher, "
            "which releases the funds they held. The market stays as it is.",
            service=market_cancel_all_orders,
            target="market",
        ),
    )
}


_MarketAdmin = type(admin.site.get_model_admin(Market))


class MarketControlAdmin(BackOfficePermissions, _MarketAdmin):
    change_form_template = "admin/compliance/market_change_form.html"
    actions = [
        *(getattr(_MarketAdmin, "actions", None) or []),
        *(control_action(c, "exchange_market_control") for c in MARKET_CONTROLS.values()),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += [f for f in ("tick_size", "lot_size", *MARKET_RULE_FIELDS) if f not in fields]
        return fields

    def get_urls(self):
        return [
            path(
                "venue/",
                self.admin_site.admin_view(self.venue_overview_view),
                name="compliance_venue_overview",
            ),
            path(
                "control/<str:name>/",
                self.admin_site.admin_view(self.control_view),
                name="exchange_market_control",
            ),
            path(
                "<path:object_id>/rules/",
                self.admin_site.admin_view(self.rules_view),
                name="exchange_market_rules",
            ),
            *super().get_urls(),
        ]

    def control_view(self, request: HttpRequest, name: str) -> HttpResponse:
        return control_view(request, model_admin=self, controls=MARKET_CONTROLS, name=name)

    def rules_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        market = self.get_object(request, unquote(object_id))
        if market is None:
            raise Http404("No such market.")
        return market_rules_view(request, model_admin=self, market=market)

    def venue_overview_view(self, request: HttpRequest) -> HttpResponse:
        return venue_overview_view(request, model_admin=self)

    def render_change_form(self, request, context, *args, **kwargs):
        context["market_controls"] = [
            c for c in MARKET_CONTROLS.values() if request.user.has_perm(c.permission)
        ]
        context["can_change_rules"] = request.user.has_perm("compliance.control_market")
        return super().render_change_form(request, context, *args, **kwargs)


admin.site.unregister(Market)
admin.site.register(Market, MarketControlAdmin)
