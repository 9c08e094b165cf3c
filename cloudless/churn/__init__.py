"""cloudless.churn -- devices that come and go.

Owns: the per-device availability model learned from a device's own online/offline history
(``model``), placement for an availability target on top of the real scheduler
(``target``), availability traces (synthetic device classes and a CSV loader, ``traces``)
and the churn simulator that drives the real reconciler and scheduler over those traces
(``sim``). Everything here is pure: time is passed in, randomness is an injected
``random.Random``. See docs/churn.md.
"""
