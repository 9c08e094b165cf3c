"""The observability plane: what Cloudless tells operators about itself.

Owns the Prometheus instruments and their names (``metrics``), the gauges computed from the
cluster's records at scrape time (``cluster``), the store's latency and error instrument
(``store``), the HTTP side (``/metrics``, the Prometheus HTTP service-discovery document, the
request instrument, a plain-HTTP metrics listener: ``http``), structured logs (``logs``) and
traces (``tracing``). Nothing here decides anything about the cluster: it only counts, renders
and exports, and every piece works the same on a leader, a follower and an agent.
"""
