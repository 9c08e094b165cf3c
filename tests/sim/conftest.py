"""Shared fixtures for the simulation scenarios (see README.md)."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    # Thousands of info lines per scenario would dominate the wall time.
    caplog.set_level(logging.WARNING)
    logging.getLogger("cloudless").setLevel(logging.WARNING)
