"""The coordinator's picture of the store: the typed tables (``cluster``), what it keeps per
workload (``records``) and the watch-fed view readers share (``live_view``)."""
