"""Leader work that watches the store and acts on it, each an ``async def``-loop in the
coordinator's task group: the reconcile loop, liveness (node states, usage and reliability
writes), the leader watch and the secret cache."""
