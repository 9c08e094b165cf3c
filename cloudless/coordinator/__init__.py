"""The control plane, laid out by what each part is (swarmkit's ``manager/`` is the model).

* ``deciders``: pure decisions over a snapshot (reconcile, stateful placement, membership,
  roll-outs, reliability, the placer seam). No ``await``, no clock, no store.
* ``state``: the typed view of the store (``ClusterState``), per-workload records, and the
  watch-fed views readers share (``LiveView`` for the reconciler, ``NodeView`` for the
  leader's agent side and the user API).
* ``loops``: leader work that watches the store and acts (the reconcile loop, liveness, the
  leader watch, the secret cache).
* ``dispatcher``: live agent sessions, assignment pushes, log routing.
* ``eventlog``: the bounded event window, its compactor, its query, and the one
  ``EventRecorder`` every part writes events through.
* ``agentapi`` and ``userapi``: the edges, the agents' gRPC API and the users' HTTPS API.
* ``wiring``: one coordinator process: configuration, embedded etcd, joining, the agent
  plane (node view + liveness + dispatcher, started per term), the leader loops
  (``leadership``), start-up.

The simulator that runs this code on a fake clock is ``cloudless.testing.sim``.

Components talk through the store, never to each other directly.
"""
