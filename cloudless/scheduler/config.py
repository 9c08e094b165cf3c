"""Scheduler configuration: factor weights and the placement strategy.

Weights are normalised to sum to 1, so ``{"locality": 1, "reliability": 1}`` (the others set
to 0) means half and half. The defaults are locality 0.25, reliability 0.30, cost 0.15,
utilization 0.20, network 0.10.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from cloudless.lib.errors import ValidationError


class Strategy(enum.StrEnum):
    """How a node is chosen among those that pass every filter.

    ``score``: highest total score. ``first_fit`` (also spelled ``pack``): first-fit
    decreasing, bins in a fixed order (nodes already in use first, then empty nodes biggest
    first). ``best_fit``: the node in use with the least capacity left after the placement;
    only when none has room, the biggest empty node. ``spread``: the node holding the fewest
    replicas of the workload, then the highest score (a soft spread over nodes).
    ``availability``: among the nodes the score strategy accepts, the one that raises the
    workload's predicted availability most (``cloudless.churn.target``; the engine scores).
    """

    SCORE = "score"
    FIRST_FIT = "first_fit"
    BEST_FIT = "best_fit"
    SPREAD = "spread"
    AVAILABILITY = "availability"


#: Accepted spellings of each strategy (specs and the cluster config).
STRATEGY_NAMES: Mapping[str, Strategy] = MappingProxyType(
    {
        "score": Strategy.SCORE,
        "pack": Strategy.FIRST_FIT,
        "first_fit": Strategy.FIRST_FIT,
        "best_fit": Strategy.BEST_FIT,
        "spread": Strategy.SPREAD,
        "availability": Strategy.AVAILABILITY,
    }
)


def parse_strategy(text: str, path: str) -> Strategy:
    """``text`` as a Strategy; ValidationError naming ``path`` and the choices otherwise."""
    s = STRATEGY_NAMES.get(str(text).strip().lower().replace("-", "_"))
    if s is None:
        raise ValidationError(
            f"{path}: unknown strategy {text!r} (choose one of {', '.join(STRATEGY_NAMES)})"
        )
    return s


#: Default factor weights (normalised to sum to 1 before use).
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"locality": 0.25, "reliability": 0.30, "cost": 0.15, "utilization": 0.20, "network": 0.10}
)


def normalize_weights(weights: Mapping[str, float], names: Sequence[str]) -> tuple[float, ...]:
    """Weights for ``names`` (in that order), missing ones taken from the defaults (0 for a
    factor without a default), scaled to sum to 1.

    Raises ValidationError naming the field for an unknown factor, a negative weight, or
    all-zero weights."""
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValidationError(
            f"scheduler.weights.{unknown[0]}: unknown factor (known: {', '.join(names)})"
        )
    vals = [float(weights.get(n, DEFAULT_WEIGHTS.get(n, 0.0))) for n in names]
    for n, v in zip(names, vals, strict=True):
        if v < 0:
            raise ValidationError(f"scheduler.weights.{n}: must be >= 0 (got {v})")
    total = sum(vals)
    if total <= 0:
        raise ValidationError("scheduler.weights: at least one weight must be > 0")
    return tuple(v / total for v in vals)


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """``affinity_scale`` is the score a preferred affinity term of weight 100 adds (or takes
    away, for anti-affinity); ``node_affinity_scale`` the most all preferred node-affinity
    terms together can add."""

    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    strategy: Strategy = Strategy.SCORE
    affinity_scale: float = 0.1
    node_affinity_scale: float = 0.2

    @classmethod
    def parse(cls, text: str, path: str = "--scheduler") -> SchedulerConfig:
        """The cluster's scheduler settings from ``strategy=pack,locality=0.4,cost=0``
        (``KEY=VALUE`` pairs: ``strategy`` and any of the five factor weights; weights not
        named keep their defaults). Raises ValidationError naming the key and the fix."""
        strategy = Strategy.SCORE
        weights = dict(DEFAULT_WEIGHTS)
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if "=" not in part and part.lower() in STRATEGY_NAMES:
                strategy = parse_strategy(part, f"{path}.strategy")  # a bare strategy name
                continue
            key, eq, raw = part.partition("=")
            key = key.strip()
            if not eq:
                raise ValidationError(f"{path}: {part!r}: expected KEY=VALUE")
            if key == "strategy":
                strategy = parse_strategy(raw, f"{path}.strategy")
                continue
            if key not in DEFAULT_WEIGHTS:
                raise ValidationError(
                    f"{path}: unknown key {key!r} (known: strategy, {', '.join(DEFAULT_WEIGHTS)})"
                )
            try:
                v = float(raw)
            except ValueError:
                v = float("nan")
            if not 0 <= v <= 1000:
                raise ValidationError(
                    f"{path}.{key}: expected a weight from 0 to 1000 (got {raw!r})"
                )
            weights[key] = v
        normalize_weights(weights, tuple(DEFAULT_WEIGHTS))
        return cls(weights=MappingProxyType(weights), strategy=strategy)
