"""Health checks on the agent.

Owns: the probe state machine (``machine``, pure: results and explicit times in, verdicts
out), the probes themselves (``probes``: exec through the runtime seam, HTTP and TCP to the
container's host port) and the per-replica runner (``runner``) that the supervisor's worker
runs beside a running container. Everything here runs on the agent alone, so checks and the
restarts they cause go on while the coordinator is unreachable; readiness reaches the
coordinator in the replica statuses of the next heartbeat.
"""
