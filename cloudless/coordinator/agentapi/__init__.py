"""The agent-facing edge: the gRPC service (``service``), enrollment, and the checks applied
to what agents report before it reaches the store."""
