"""The agent protocol: generated protobuf/gRPC modules (``gen``), their sources (``protos``), and
the conversions between protobuf messages and the model (``convert``), used by both the agent
and the coordinator."""
