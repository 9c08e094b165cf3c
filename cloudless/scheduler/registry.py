"""The plugin registry: which filters run (in this order; a refused node is counted under the
first it fails) and which score factors are summed (in this order).

Adding a factor: write ``plugins/<name>.py`` with a ``Factor`` subclass (``name``,
``default_weight``, ``score``), add one line to ``FACTORS``, and mirror its formula in
``reference.py`` (the oracle test compares the two).
"""

from __future__ import annotations

from cloudless.scheduler.plugins.arch import ArchFilter
from cloudless.scheduler.plugins.base import Factor, Filter
from cloudless.scheduler.plugins.cost import CostFactor
from cloudless.scheduler.plugins.host_ports import HostPortsFilter
from cloudless.scheduler.plugins.locality import LocalityFactor
from cloudless.scheduler.plugins.max_per_domain import MaxPerDomainFilter
from cloudless.scheduler.plugins.max_per_node import MaxPerNodeFilter
from cloudless.scheduler.plugins.network import NetworkFilter
from cloudless.scheduler.plugins.network_score import NetworkFactor
from cloudless.scheduler.plugins.node_affinity import NodeAffinityFilter
from cloudless.scheduler.plugins.node_conditions import NodeConditionsFilter
from cloudless.scheduler.plugins.node_selector import NodeSelectorFilter
from cloudless.scheduler.plugins.node_state import NodeStateFilter
from cloudless.scheduler.plugins.reliability import ReliabilityFactor
from cloudless.scheduler.plugins.resources import ResourcesFilter
from cloudless.scheduler.plugins.self_affinity import SelfAffinityFilter
from cloudless.scheduler.plugins.spread import SpreadFilter
from cloudless.scheduler.plugins.topology import TopologyFilter
from cloudless.scheduler.plugins.utilization import UtilizationFactor
from cloudless.scheduler.plugins.workload_affinity import WorkloadAffinityFilter

FILTERS: tuple[Filter, ...] = (
    NodeStateFilter(),
    NodeConditionsFilter(),
    ArchFilter(),
    NodeSelectorFilter(),
    NodeAffinityFilter(),
    NetworkFilter(),
    TopologyFilter(),
    WorkloadAffinityFilter(),
    ResourcesFilter(),
    MaxPerNodeFilter(),
    HostPortsFilter(),
    MaxPerDomainFilter(),
    SelfAffinityFilter(),
    SpreadFilter(),
)

FACTORS: tuple[Factor, ...] = (
    LocalityFactor(),
    ReliabilityFactor(),
    CostFactor(),
    UtilizationFactor(),
    NetworkFactor(),
)

FACTOR_NAMES = tuple(f.name for f in FACTORS)
