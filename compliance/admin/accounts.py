"""Account and order controls in the admin: freeze, unfreeze, close and cancel-all on
accounts, force-cancel on orders (each confirmed with a reason on its own page), and
the account's 360° page.

The exchange app registers the Account and Order admins; these extend whichever
admin is registered for them at import (the exchange's, or one another back-office
module has already extended), so each area adds its part without replacing another's.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html

import exchange.admin  # noqa: F401  (registers the admins extended here)
from compliance.admin.views import (
    Control,
    account_360_view,
    control_action,
    control_view,
)
from compliance.services.accounts import (
    account_cancel_all_orders,
    account_close,
    account_freeze,
    account_unfreeze,
    order_force_cancel,
)
from exchange.models import Account, Order

ACCOUNT_CONTROLS = {
    control.name: control
    for control in (
        Control(
            name="freeze",
            verb="Freeze",
            done="frozen",
            permission="compliance.freeze_account",
            explanation="A frozen account can no longer place orders or withdraw. Every open "
            "order of it is cancelled by the matcher, which releases the funds they held.",
            service=account_freeze,
            target="account",
        ),
        Control(
            name="unfreeze",
            verb="Unfreeze",
            done="unfrozen",
            permission="compliance.freeze_account",
            explanation="The freeze in force is lifted and the account is active again: it may "
            "trade and withdraw.",
            service=account_unfreeze,
            target="account",
        ),
        Control(
            name="close",
            verb="Close",
            done="closed",
            permission="compliance.close_account",
            explanation="A closed account never trades or withdraws again. An account that "
            "still holds funds is not closed: cancel its orders and have the trader withdraw "
            "first (unfreeze it for that if it is frozen), or settle the balances with a ledger "
            "adjustment.",
            service=account_close,
            target="account",
        ),
        Control(
            name="cancel_orders",
            verb="Cancel all orders of",
            done="cancelled the orders of",
            permission="compliance.cancel_orders",
            explanation="Every open order of the account, in every market, is cancelled by the "
            "matcher, which releases the funds they held. The account stays as it is.",
            service=account_cancel_all_orders,
            target="account",
        ),
    )
}

ORDER_CONTROLS = {
    "force_cancel": Control(
        name="force_cancel",
        verb="Force-cancel",
        done="force-cancelled",
        permission="compliance.cancel_orders",
        explanation="The matcher cancels the order and releases the funds it held. An order "
        "that fills or finishes before the matcher reaches the cancel stays as it ended.",
        service=order_force_cancel,
        target="order",
    )
}


class BackOfficePermissions:
    """``has_<codename>_permission`` for the back-office permissions that actions name."""

    def has_freeze_account_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("compliance.freeze_account")

    def has_close_account_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("compliance.close_account")

    def has_cancel_orders_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("compliance.cancel_orders")

    def has_control_market_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("compliance.control_market")


_AccountAdmin = type(admin.site.get_model_admin(Account))
_OrderAdmin = type(admin.site.get_model_admin(Order))


class AccountControlAdmin(BackOfficePermissions, _AccountAdmin):
    change_form_template = "admin/compliance/account_change_form.html"
    actions = [
        *(getattr(_AccountAdmin, "actions", None) or []),
        *(control_action(c, "exchange_account_control") for c in ACCOUNT_CONTROLS.values()),
    ]

    def get_urls(self):
        return [
            path(
                "control/<str:name>/",
                self.admin_site.admin_view(self.control_view),
                name="exchange_account_control",
            ),
            path(
                "<path:object_id>/360/",
                self.admin_site.admin_view(self.account_360_view),
                name="exchange_account_360",
            ),
            *super().get_urls(),
        ]

    def get_list_display(self, request: HttpRequest):
        columns = list(super().get_list_display(request))
        if request.user.has_perm("compliance.view_venue"):
            columns.append("account_360_link")
        return columns

    @admin.display(description="360°")
    def account_360_link(self, account: Account) -> str:
        url = reverse("admin:exchange_account_360", args=[quote(account.pk)])
        return format_html('<a href="{}">360°</a>', url)

    def control_view(self, request: HttpRequest, name: str) -> HttpResponse:
        return control_view(request, model_admin=self, controls=ACCOUNT_CONTROLS, name=name)

    def account_360_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        account = self.get_object(request, unquote(object_id))
        if account is None:
            raise Http404("No such account.")
        return account_360_view(request, model_admin=self, account=account)

    def render_change_form(self, request, context, *args, **kwargs):
        context["account_controls"] = [
            c for c in ACCOUNT_CONTROLS.values() if request.user.has_perm(c.permission)
        ]
        return super().render_change_form(request, context, *args, **kwargs)


class OrderControlAdmin(BackOfficePermissions, _OrderAdmin):
    change_form_template = "admin/compliance/order_change_form.html"
    actions = [
        *(getattr(_OrderAdmin, "actions", None) or []),
        *(control_action(c, "exchange_order_control") for c in ORDER_CONTROLS.values()),
    ]

    def get_urls(self):
        return [
            path(
                "control/<str:name>/",
                self.admin_site.admin_view(self.control_view),
                name="exchange_order_control",
            ),
            *super().get_urls(),
        ]

    def control_view(self, request: HttpRequest, name: str) -> HttpResponse:
        return control_view(request, model_admin=self, controls=ORDER_CONTROLS, name=name)

    def render_change_form(self, request, context, *args, **kwargs):
        context["order_controls"] = [
            c for c in ORDER_CONTROLS.values() if request.user.has_perm(c.permission)
        ]
        return super().render_change_form(request, context, *args, **kwargs)


admin.site.unregister(Account)
admin.site.register(Account, AccountControlAdmin)
admin.site.unregister(Order)
admin.site.register(Order, OrderControlAdmin)
