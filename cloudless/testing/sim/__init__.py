"""A simulated cluster on one ``FakeClock``, running the product's own code.

``SimCluster`` runs, in one event loop, one or more coordinator *brains* (the real
``Election``, ``Leadership`` with ``AgentPlane``, ``Reconciler`` and the real
``SchedulerPlacer``, and ``AgentSessions`` serving agents, over one shared ``MemoryStore``)
and many *agents*, each the real ``Supervisor`` over a ``FakeRuntime`` on its own ``FakeHost``
and the real ``Link``, connected through the in-memory transport
(``cloudless.transport.memory``) instead of gRPC. Time moves only when the harness advances
the clock (``run_for``/``until``), and after each step the loop is run until it has nothing
left to do, so minutes of cluster time pass in about a second and nothing sleeps for real.

Faults, per agent (``SimAgent``): ``kill`` (process gone, its channel closes), ``crash_host``
(the machine too: its containers vanish), ``freeze`` (the link's clock and channel stop),
``partition``/``heal`` (the channel is cut without a FIN while the supervisor and its
containers go on), ``restart`` (new supervisor, runtime and link on the same host: they
adopt the containers), and ``FakeBehavior`` knobs for crashing containers and slow pulls.
Per brain: ``crash`` (dies without resigning: its lease must lapse first).

``SimCluster.view()`` reads the store into a ``SimView``; ``SimView.dump()`` is the readable
cluster picture every harness failure message carries, and ``SimCluster.problems()`` checks
the invariants that must hold once the cluster has settled.
"""

from cloudless.testing.sim.agent import AgentStats, SimAgent
from cloudless.testing.sim.base import GatedStore, SimClock, SimError
from cloudless.testing.sim.brain import Brain
from cloudless.testing.sim.cluster import NODE_SIZE, SimCluster, spec
from cloudless.testing.sim.view import SimView, problems

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
