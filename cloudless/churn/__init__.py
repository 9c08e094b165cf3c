"""cloudless.churn -- devices that come and go.

Owns: the per-device availability model learned from a device's own online/offline history
(``model``) and the session history it learns from (``log``), placement for an
availability target on top of the real scheduler (``target``), availability traces
(synthetic device classes and a CSV loader, ``traces``), a simulated home fleet
(``fleet``) and the churn simulator that drives the real reconciler and scheduler over
those traces (``sim``). Everything here is pure: time is passed in, randomness is an injected
``random.Random``. See docs/churn.md.
"""
