"""A simulated cluster on one ``FakeClock``: real coordinator brains, simulated agents.

``SimCluster`` runs, in one event loop, one or more coordinator *brains* (the real
``Election``, ``AgentPlane`` and ``Reconciler`` with the real ``SchedulerPlacer``, over one
shared ``MemoryStore``) and many *agents*, each the real ``Supervisor`` over a ``FakeRuntime``
on its own ``FakeHost`` plus a small in-process link that does what
``cloudless.agent.link.Link`` does without gRPC: open a session on the leader's dispatcher, send a
Hello and heartbeats with the replica statuses, and hand every ``Assignments`` message to the
supervisor. Time moves only when the harness advances the clock (``run_for``/``until``), and
after each step the loop is run until it has nothing left to do, so minutes of cluster time
pass in about a second and nothing sleeps for real.

Faults, per agent (``SimAgent``): ``kill`` (process gone, stream breaks), ``crash_host``
(the machine too: its containers vanish), ``freeze`` (no heartbeats, session left open),
``partition``/``heal`` (link cut without a FIN while the supervisor and its containers go
on; heal reconnects with a new session), ``restart`` (new supervisor and runtime on the same
host: they adopt the containers), and ``FakeBehavior`` knobs for crashing containers and slow
pulls. Per brain: ``crash`` (dies without resigning: its lease must lapse first).

``SimCluster.view()`` reads the store into a ``SimView``; ``SimView.dump()`` is the readable
cluster picture every harness failure message carries, and ``SimCluster.problems()`` checks
the invariants that must hold once the cluster has settled.
"""

from cloudless.coordinator.sim.agent import AgentStats, SimAgent
from cloudless.coordinator.sim.base import GatedStore, SimClock, SimError
from cloudless.coordinator.sim.brain import Brain
from cloudless.coordinator.sim.cluster import NODE_SIZE, SimCluster, spec
from cloudless.coordinator.sim.view import SimView, problems

__all__ = [
    "NODE_SIZE",
    "AgentStats",
    "Brain",
    "GatedStore",
    "SimAgent",
    "SimClock",
    "SimCluster",
    "SimError",
    "SimView",
    "problems",
    "spec",
]
