"""The block resync queue's retry schedule (the queue itself runs against real nodes in
``tests/integration/objectstore/test_antientropy.py``)."""

from __future__ import annotations

import pytest

from cloudless.objectstore.resync import backoff

SCHEDULE = [
    # (failures so far, seconds to the next try): 30 s doubled per failure, capped at 1 h
    (1, 30.0),
    (2, 60.0),
    (3, 120.0),
    (7, 1920.0),  # 30 * 2^6
    (8, 3600.0),  # 30 * 2^7 = 3840 > 3600: capped
    (1000, 3600.0),  # no overflow for a block that has failed for weeks
]


@pytest.mark.parametrize(("errors", "seconds"), SCHEDULE)
def test_backoff_doubles_up_to_an_hour(errors: int, seconds: float) -> None:
    assert backoff(errors) == seconds


def test_backoff_needs_a_failure() -> None:
    with pytest.raises(ValueError, match="errors 0: a retry follows at least one failure"):
        backoff(0)
