"""The agent-facing edge: the gRPC service (``service``), the agent session it serves over a
``cloudless.transport`` channel (``sessions``, the same code the simulator runs over the
in-memory channel), enrollment, and the checks applied to what agents report before it
reaches the store."""
