"""Which etcd exits mean the member was removed (``etcd_process.says_removed``): the
supervisor must then stop, never restart it on its old data dir."""

from __future__ import annotations

import pytest

from cloudless.store.etcd_process import says_removed

PANIC = (
    '{"level":"panic","caller":"membership/cluster.go:813","msg":"failed to find local ID in '
    'cluster members","local-member-id":"31288b4298ce71de"}\\npanic: failed to find local ID '
    "in cluster members"
)


@pytest.mark.parametrize(
    ("log", "removed"),
    [
        ('"error":"the member has been permanently removed from the cluster"', True),
        ("rejected stream: the member has been removed", True),
        (PANIC, True),  # a member that applied its own removal first (seen in a clean clone)
        ('"msg":"rejecting member remove request; local member has not been connected"', False),
        ('"msg":"received signal; shutting down","signal":"terminated"', False),
        ("", False),
    ],
)
def test_says_removed(log: str, removed: bool) -> None:
    assert says_removed(log) is removed
