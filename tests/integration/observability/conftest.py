"""Re-use the in-process ``cluster`` fixture (coordinator on the memory store, real mTLS
gRPC and HTTPS on loopback, fake-runtime agents)."""

from tests.integration.cluster.conftest import cluster

__all__ = ["cluster"]
