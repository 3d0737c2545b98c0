"""The detectors' thresholds, read from ``settings.SURVEILLANCE`` when a scan starts (so
a test or an operator can change them without a restart of anything but the scan)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True, slots=True)
class SurveillanceConfig:
    window_seconds: int = 300
    settle_seconds: int = 60
    catchup_windows: int = 3
    max_run_windows: int = 2016
    wash_min_trades: int = 2
    wash_min_notional: Decimal = Decimal(0)
    wash_high_volume_share: Decimal = Decimal("0.25")
    spoof_size_multiple: Decimal = Decimal(10)
    spoof_baseline_seconds: int = 3600
    spoof_min_baseline_orders: int = 20
    spoof_cancel_seconds: int = 5
    spoof_max_fill_ratio: Decimal = Decimal("0.1")
    spoof_layer_orders: int = 3
    activity_lookback_windows: int = 24
    activity_min_history_windows: int = 12
    volume_stdevs: Decimal = Decimal(4)
    volume_min_ratio: Decimal = Decimal(5)
    price_stdevs: Decimal = Decimal(4)
    price_min_move_bps: Decimal = Decimal(100)
    burst_seconds: int = 10
    burst_min_orders: int = 50
    burst_min_cancel_ratio: Decimal = Decimal("0.9")

    @classmethod
    def from_settings(cls) -> SurveillanceConfig:
        return cls.from_mapping(getattr(settings, "SURVEILLANCE", {}))

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SurveillanceConfig:
        known = {f.name: f for f in fields(cls)}
        parsed = {}
        for key, raw in values.items():
            name = key.lower()
            if name not in known:
                raise ImproperlyConfigured(f"SURVEILLANCE has an unknown setting {key!r}")
            default = known[name].default
            try:
                value = Decimal(str(raw)) if isinstance(default, Decimal) else int(raw)
            except (InvalidOperation, TypeError, ValueError):
                raise ImproperlyConfigured(
                    f"SURVEILLANCE[{key!r}] is not a number: {raw!r}"
                ) from None
            if (isinstance(value, Decimal) and not value.is_finite()) or value < 0:
                raise ImproperlyConfigured(f"SURVEILLANCE[{key!r}] must be a finite number ≥ 0")
            parsed[name] = value
        config = cls(**parsed)
        for name in ("window_seconds", "burst_seconds", "activity_lookback_windows"):
            if getattr(config, name) <= 0:
                raise ImproperlyConfigured(f"SURVEILLANCE[{name.upper()!r}] must be positive")
        return config

    def thresholds(self, prefix: str) -> dict[str, str | int]:
        """The settings whose names start with ``prefix``, as an alert's evidence shows
        them (decimals as strings)."""
        return {
            f.name: (str(value) if isinstance(value := getattr(self, f.name), Decimal) else value)
            for f in fields(self)
            if f.name.startswith(prefix)
        }
