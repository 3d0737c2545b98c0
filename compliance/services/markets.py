"""Staff controls of markets: halt, resume, cancel every order, change fees and limits.

Each goes through the matcher's command journal, so the matcher applies it in order
with the orders around it, and is recorded in the audit trail in the same transaction.
The market row itself changes when the matcher applies the command (HALT, RESUME,
SET_RULES), never before: the book and the row never disagree.

What a rules change binds, and from when:

- ``price_band`` is the matcher's: market orders applied after the SET_RULES command
  sweep within the new band.
- ``min_quantity`` and ``min_notional`` are checked as orders are accepted, against
  the market row: they bind the orders accepted after the matcher applied the change.
- ``maker_fee_rate`` and ``taker_fee_rate`` are stamped on each order when it is
  accepted (its hold reserves the taker fee), so they apply to orders accepted after
  the change; resting orders keep the rates they were accepted at.

Tick and lot size never change here: resting orders would fall off the grid.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.db import DatabaseError, transaction

from compliance.services.accounts import OPEN_ORDER_STATUSES, ControlError, reason_required
from compliance.services.audit import Actor, audit_record, model_state
from exchange.models import (
    MARKET_RULE_FIELDS,
    CommandKind,
    CommandStatus,
    Market,
    MarketStatus,
    Order,
    OrderCommand,
)
from exchange.services.orders import order_cancel_all


class MarketControlError(ControlError):
    """A market control was refused; nothing changed."""


def _market_locked(market: Market) -> Market:
    return Market.objects.select_for_update(of=("self",)).get(pk=market.pk)


def _pending(market: Market, *kinds: str) -> OrderCommand | None:
    return (
        OrderCommand.objects.filter(market=market, status=CommandStatus.PENDING, kind__in=kinds)
        .order_by("id")
        .first()
    )


def _state_change(
    *, actor: Actor, market: Market, reason: str, kind: str, expected: str, action: str
) -> OrderCommand:
    reason = reason_required(reason)
    locked = _market_locked(market)
    if (waiting := _pending(locked, CommandKind.HALT, CommandKind.RESUME)) is not None:
        raise MarketControlError(
            f"a {waiting.kind} of {locked.symbol} is waiting for the matcher (command "
            f"#{waiting.pk}); try again once it is applied"
        )
    if locked.status != expected:
        raise MarketControlError(f"{locked.symbol} is {locked.status}, not {expected}")
    command = OrderCommand.objects.create(market=locked, kind=kind)
    audit_record(
        actor=actor,
        action=action,
        target=locked,
        before=model_state(locked, ["status"]),
        after={"command": command.pk, "kind": kind},
        reason=reason,
    )
    return command


@transaction.atomic(durable=True)
def market_halt_request(*, actor: Actor, market: Market, reason: str) -> OrderCommand:
    """Ask the matcher to halt ``market``: it stops accepting orders and amends, keeps
    the book, and still applies cancels and expiries. The market turns HALTED when the
    matcher applies the command."""
    return _state_change(
        actor=actor,
        market=market,
        reason=reason,
        kind=CommandKind.HALT,
        expected=MarketStatus.OPEN,
        action="market.halt",
    )


@transaction.atomic(durable=True)
def market_resume_request(*, actor: Actor, market: Market, reason: str) -> OrderCommand:
    """Ask the matcher to resume a halted ``market``."""
    return _state_change(
        actor=actor,
        market=market,
        reason=reason,
        kind=CommandKind.RESUME,
        expected=MarketStatus.HALTED,
        action="market.resume",
    )


@transaction.atomic(durable=True)
def market_cancel_all_orders(*, actor: Actor, market: Market, reason: str) -> OrderCommand:
    """Cancel every trader's open orders in ``market`` (one CANCEL_ALL for all
    accounts); the matcher releases their holds as it applies it."""
    reason = reason_required(reason)
    locked = _market_locked(market)
    open_orders = Order.objects.filter(market=locked, status__in=OPEN_ORDER_STATUSES).count()
    if not open_orders:
        raise MarketControlError(f"{locked.symbol} has no open orders")
    command = order_cancel_all(account=None, market=locked)
    audit_record(
        actor=actor,
        action="market.cancel_all_orders",
        target=locked,
        before={"open_orders": open_orders},
        after={"command": command.pk},
        reason=reason,
    )
    return command


# What each rule must satisfy, as the market table's checks say it (market_fee_rates,
# market_min_quantity_on_lot, market_min_notional, market_price_band). They are checked
# here so the matcher never meets a change the table would refuse.
_PLACES = {name: Market._meta.get_field(name).decimal_places for name in MARKET_RULE_FIELDS}


def _decimal(name: str, value) -> Decimal:
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise MarketControlError(f"{name} must be a number, not {value!r}") from None
    if not number.is_finite():
        raise MarketControlError(f"{name} must be a finite number, not {value!r}")
    if number != number.quantize(Decimal(1).scaleb(-_PLACES[name])):
        raise MarketControlError(f"{name} {number} has more than {_PLACES[name]} decimal places")
    return number


def _rules_check(market: Market, rules: dict[str, Decimal]) -> None:
    maker, taker = rules["maker_fee_rate"], rules["taker_fee_rate"]
    if not Decimal(0) <= taker <= Decimal("0.1"):
        raise MarketControlError(f"taker_fee_rate must lie between 0 and 0.1, not {taker}")
    if not -taker <= maker <= taker:
        raise MarketControlError(
            f"maker_fee_rate must lie between -taker_fee_rate ({-taker}) and taker_fee_rate "
            f"({taker}), not {maker}: a maker rebate may never exceed the taker fee, nor a "
            "maker fee the taker fee (a resting buy holds for its fee at the taker rate)"
        )
    min_quantity = rules["min_quantity"]
    if min_quantity < market.lot_size or min_quantity % market.lot_size:
        raise MarketControlError(
            f"min_quantity must be a positive multiple of the lot size {market.lot_size}, "
            f"not {min_quantity}"
        )
    if rules["min_notional"] < 0:
        raise MarketControlError(f"min_notional may not be negative, not {rules['min_notional']}")
    if not Decimal(0) < rules["price_band"] < 1:
        raise MarketControlError(
            f"price_band must lie strictly between 0 and 1, not {rules['price_band']}"
        )


def _rules_fit_table(market: Market, rules: dict[str, Decimal]) -> None:
    """Try the change on the market row and undo it: the table's own checks have the
    last word, so the matcher is never handed a command it could not apply."""
    try:
        with transaction.atomic():
            Market.objects.filter(pk=market.pk).update(**rules)
            transaction.set_rollback(True)
    except DatabaseError as exc:
        raise MarketControlError(f"the market table refuses these rules: {exc}") from None


@transaction.atomic(durable=True)
def market_rules_change(
    *,
    actor: Actor,
    market: Market,
    reason: str,
    maker_fee_rate: Decimal | None = None,
    taker_fee_rate: Decimal | None = None,
    min_quantity: Decimal | None = None,
    min_notional: Decimal | None = None,
    price_band: Decimal | None = None,
    tick_size: Decimal | None = None,
    lot_size: Decimal | None = None,
) -> OrderCommand:
    """Change ``market``'s fees, minimums or price band (the arguments given; the rest
    stay) through a SET_RULES command the matcher applies in journal order. One change
    waits for the matcher at a time, so each is checked against the rules it replaces.
    Tick and lot size cannot change (see the module's docstring)."""
    reason = reason_required(reason)
    locked = _market_locked(market)
    for name, value in (("tick_size", tick_size), ("lot_size", lot_size)):
        if value is not None and Decimal(value) != getattr(locked, name):
            raise MarketControlError(
                f"{name} cannot change on a listed market: resting orders would fall off "
                "the grid. List a new market instead."
            )
    if locked.status == MarketStatus.CLOSED:
        raise MarketControlError(f"{locked.symbol} is closed")
    if (waiting := _pending(locked, CommandKind.SET_RULES)) is not None:
        raise MarketControlError(
            f"a rules change of {locked.symbol} is waiting for the matcher (command "
            f"#{waiting.pk}); try again once it is applied"
        )
    given = {
        "maker_fee_rate": maker_fee_rate,
        "taker_fee_rate": taker_fee_rate,
        "min_quantity": min_quantity,
        "min_notional": min_notional,
        "price_band": price_band,
    }
    current = {name: getattr(locked, name) for name in MARKET_RULE_FIELDS}
    rules = {
        name: current[name] if value is None else _decimal(name, value)
        for name, value in given.items()
    }
    if rules == current:
        raise MarketControlError(f"these are {locked.symbol}'s rules already: nothing to change")
    _rules_check(locked, rules)
    _rules_fit_table(locked, rules)
    command = OrderCommand.objects.create(
        market=locked,
        kind=CommandKind.SET_RULES,
        payload={name: str(value) for name, value in rules.items()},
    )
    audit_record(
        actor=actor,
        action="market.rules_change",
        target=locked,
        before=model_state(locked, list(MARKET_RULE_FIELDS)),
        after={**{name: str(value) for name, value in rules.items()}, "command": command.pk},
        reason=reason,
    )
    return command
