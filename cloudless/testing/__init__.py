"""Test support shipped with the product (as ``trio.testing``): fakes, the simulator and
the conformance checks any implementation of a seam can run. Nothing in the product imports
this package.

* ``channel_checks``: the agent-coordinator channel contract (``cloudless.transport``),
  run against the gRPC and the in-memory implementation by ``tests/contract/transport``.
* ``sim``: ``SimCluster``, a whole cluster on one fake clock running the real agent
  (``Link``, ``Supervisor``) and the real coordinator (``Leadership``, ``AgentPlane``,
  ``Reconciler``, ``AgentSessions``) over the in-memory transport (``tests/sim``, benches).
* ``fake_placer``: a scripted ``Placer`` for reconciler tests (it passes the placer
  contract suite, ``tests/contract/coordinator``).
* ``etcd``: real etcd members for tests and benches (a test PKI, free ports, a supervised
  three-member cluster).
"""
