"""Settings are read from the environment; pick a profile with DJANGO_SETTINGS_MODULE.

- ``dex.settings.local``      — a developer's machine (``make run``); DEBUG on by default.
- ``dex.settings.test``       — the test suite (``make test``).
- ``dex.settings.production`` — refuses to start with a default secret key or KYC
  document salt, or with DEBUG on.
"""
