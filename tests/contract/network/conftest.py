"""Namespaces for the real side of the network contract suites (skipped without root)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloudless.network.testing import Namespaces, sweep_dead_runs, unavailable_reason


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    sweep_dead_runs()
    ns = Namespaces("c")
    try:
        yield ns
    finally:
        ns.close()
