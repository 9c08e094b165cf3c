"""The cluster's event log: a bounded window of events, and how readers page through it.

Owns three things, each in its own module:

* ``window``: the bounds (``EventBounds``: how many events, how old) and the pure decision of
  which events fall outside them (``outside_window``).
* ``compactor``: ``EventCompactor``, the leader's loop that deletes those events in fenced
  batches, so the events table (and with etcd's revision auto-compaction, the store) stays
  bounded however many events the cluster writes.
* ``query``: ``EventQuery`` (after a position, of a kind, about an object, at most a limit)
  parsed from ``GET /v1/events`` and applied in pure code (``page``); ``feed`` follows the
  watch on from a page's end, with no gap and no duplicate between the two.

Writers are unchanged: anything may put an event with ``cloudless.coordinator.state.cluster.event``.
"""

from cloudless.coordinator.eventlog.compactor import EventCompactor
from cloudless.coordinator.eventlog.query import EventQuery, Page, Position, feed, page
from cloudless.coordinator.eventlog.window import EventBounds, event_time, outside_window

__all__ = [
    "EventBounds",
    "EventCompactor",
    "EventQuery",
    "Page",
    "Position",
    "event_time",
    "feed",
    "outside_window",
    "page",
]
