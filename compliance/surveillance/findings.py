"""What a detector reports: a :class:`Finding` over a :class:`Window`, with its evidence
as JSON-safe values (decimals as strings, timestamps in ISO 8601 UTC), ready to become
a ``SurveillanceAlert``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from exchange.models import Market, Order, Trade

# An alert lists at most this many orders or trades; its figures count all of them.
EVIDENCE_ROWS_MAX = 200


@dataclass(frozen=True, slots=True)
class Window:
    """``[start, end)``: what happened at ``start`` is in, at ``end`` is in the next."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"a window must end after it starts: {self.start} – {self.end}")

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())

    def shifted(self, windows: int) -> Window:
        step = timedelta(seconds=self.seconds) * windows
        return Window(self.start + step, self.end + step)

    def key(self) -> str:
        return f"{int(self.start.timestamp())}-{int(self.end.timestamp())}"

    def __str__(self) -> str:
        return f"{iso(self.start)} – {iso(self.end)}"


@dataclass(frozen=True, slots=True)
class Finding:
    """One pattern in one market and window. ``subject`` names who it is about (an
    account, a beneficial owner, the market) so that the dedupe key is stable."""

    kind: str
    severity: str
    market: Market
    window: Window
    subject: str
    summary: str
    evidence: dict[str, Any]
    account_id: int | None = None

    @property
    def dedupe_key(self) -> str:
        return f"{self.kind}:m{self.market.pk}:{self.subject}:{self.window.key()}"


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dec(value: Decimal | None) -> str | None:
    """Exact, without the trailing zeros of the column's scale: 2.50000000 is "2.5"."""
    return None if value is None else format(value.normalize(), "f")


def seconds_between(start: datetime | None, end: datetime | None) -> str | None:
    if start is None or end is None:
        return None
    return f"{(end - start).total_seconds():.3f}"


def order_row(order: Order) -> dict[str, Any]:
    """An order as evidence: who, what, and when it was placed and finished."""
    return {
        "id": order.pk,
        "account_id": order.account_id,
        "side": order.side,
        "type": order.type,
        "price": dec(order.price),
        "quantity": dec(order.quantity),
        "filled": dec(order.filled),
        "status": order.status,
        "reason": order.reason,
        "created_at": iso(order.created_at),
        "done_at": iso(order.done_at),
        "lifetime_seconds": seconds_between(order.created_at, order.done_at),
    }


def trade_row(trade: Trade) -> dict[str, Any]:
    return {
        "id": trade.pk,
        "sequence": trade.sequence,
        "buyer_id": trade.buyer_id,
        "seller_id": trade.seller_id,
        "maker_order_id": trade.maker_order_id,
        "taker_order_id": trade.taker_order_id,
        "aggressor_side": trade.aggressor_side,
        "price": dec(trade.price),
        "quantity": dec(trade.quantity),
        "notional": dec(trade.quote_quantity),
        "executed_at": iso(trade.executed_at),
    }


def limited(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows[:EVIDENCE_ROWS_MAX]
