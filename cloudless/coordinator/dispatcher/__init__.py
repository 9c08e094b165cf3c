"""The agent side of the leader: live agent sessions, assignment pushes and log routing
(``dispatcher``). Liveness (``cloudless.coordinator.loops.liveness``) judges the nodes from
what the sessions see; both are started together by
``cloudless.coordinator.wiring.agent_plane``."""
