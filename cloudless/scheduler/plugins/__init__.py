"""Scheduler plugins: one filter or score factor per module, wired in ``registry.py``.

A filter says, per node, whether it passes, and a reason for the nodes that do not. A score
factor gives every node a value in [0, 1]. Both work on whole numpy columns at once.
"""
