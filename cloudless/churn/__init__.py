"""cloudless.churn -- devices that come and go.

Owns: the per-device availability model learned from a device's own online/offline history
(``model``) and the session history it learns from (``log``), placement for an
availability target on top of the real scheduler (``target``), availability traces
(synthetic device classes and a CSV loader, ``traces``), a simulated home fleet
(``fleet``) and the churn simulator that drives the real reconciler and scheduler over
those traces (``sim``); in the running coordinator, the leader loop that keeps each node's
history in the store and feeds the placer (``keeper``) and the placer that routes each
workload by its strategy (``route``). Everything but ``keeper`` is pure: time is passed in,
randomness is an injected ``random.Random``. See docs/churn.md.
"""
