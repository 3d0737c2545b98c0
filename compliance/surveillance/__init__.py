"""Market surveillance: detectors that look for abusive patterns in a market's orders
and trades over a time window, and the runner that turns what they find into
``SurveillanceAlert`` rows.

One module per detector (``wash_trading``, ``spoofing``, ``unusual_activity``,
``order_bursts``), each a function ``detect(*, market, window, config)`` returning
:class:`~compliance.surveillance.findings.Finding` objects whose evidence names the
orders and trades, their timings and quantities, the figures computed and the thresholds
they were compared with. Thresholds come from ``settings.SURVEILLANCE``
(:mod:`compliance.surveillance.config`); each detector's docstring says what its own
mean.

Windows are aligned on the Unix epoch (:func:`~compliance.surveillance.runner.windows_between`)
and an alert's ``dedupe_key`` is built from its kind, market, subject and window, so the
scheduled scan, a retried task and an on-demand run over the same period raise each
pattern once.
"""
