"""The agent side of the leader: live agent sessions, assignment pushes, liveness and log
routing (the ``hub``)."""
