"""cloudless.scheduler -- decides where every replica runs. Pure: no I/O, clock or await.

The coordinator builds an immutable ``Snapshot`` of nodes and placed replicas, asks for a
``Plan`` and re-checks it against fresh state before committing it::

    snap = Snapshot.build(nodes, replicas, specs_by_name)
    problems = validate_placeable(spec, snap)             # reject at submit time
    plan = Scheduler(config, rng).place(snap, spec, 3)   # or .schedule_many(snap, [(spec, n)])
    for a in plan.assignments: ...                        # a.node_id, a.score, a.components
    for u in plan.unplaced: u.reason                      # "0/12 nodes fit: 7 insufficient ..."
    stop = choose_replicas_to_stop(snap, spec, replicas, keep=spec.replicas)

Filters and score factors are plugins (``plugins/``) wired in ``registry.py``;
``reference.py`` is a plain-Python twin kept as the test oracle. See docs/scheduler.md.
"""

from cloudless.scheduler.config import DEFAULT_WEIGHTS, SchedulerConfig, Strategy
from cloudless.scheduler.evict import choose_replicas_to_stop
from cloudless.scheduler.packers import pack, pack_best_fit, pack_with_spread
from cloudless.scheduler.plan import (
    Assignment,
    Explanation,
    NodeScore,
    Plan,
    Rejections,
    ScoreComponents,
    Unplaced,
)
from cloudless.scheduler.scheduler import Scheduler, explain, schedule_many
from cloudless.scheduler.snapshot import Snapshot
from cloudless.scheduler.strategy import with_spread
from cloudless.scheduler.validate import validate_placeable

__all__ = [
    "DEFAULT_WEIGHTS",
    "Assignment",
    "Explanation",
    "NodeScore",
    "Plan",
    "Rejections",
    "Scheduler",
    "SchedulerConfig",
    "ScoreComponents",
    "Snapshot",
    "Strategy",
    "Unplaced",
    "choose_replicas_to_stop",
    "explain",
    "pack",
    "pack_best_fit",
    "pack_with_spread",
    "schedule_many",
    "validate_placeable",
    "with_spread",
]
