"""Test support shipped with the product (as ``trio.testing``): fakes, the simulator and
the conformance checks any implementation of a seam can run.

* ``channel_checks``: the agent-coordinator channel contract (``cloudless.transport``),
  run against the gRPC and the in-memory implementation by ``tests/contract/transport``.
"""
