"""The compliance back office in the admin, one module per area (rules, KYC, account
and market controls, surveillance, audit, reports). Each module registers its own
admin classes and views; importing the package loads them all."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
