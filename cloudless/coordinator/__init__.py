"""The control plane.

Pure decision modules (``membership``, ``reconcile``) hold no I/O; the loops around them
(``loops``), the agent gRPC API (``agent_api``), the user HTTPS API (``http_api``) and the
process wiring (``server``) act at the edges. Components talk through the store, never to each
other directly.
"""
