"""Leader work that watches the store and acts on it, each an ``async def run()``-style loop
in the coordinator's task group: the reconcile loop, the leader watch and the secret cache."""
