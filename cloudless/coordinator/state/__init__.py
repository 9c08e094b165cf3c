"""The coordinator's picture of the store: the typed tables (``cluster``), what it keeps per
workload (``records``) and the watch-fed views readers share (``live_view`` for the
reconciler, ``node_view`` for the leader's agent side and the user API)."""
