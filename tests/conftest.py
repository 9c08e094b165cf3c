"""Suite-wide test settings.

Hypothesis draws the same examples on every run (``derandomize``): CI must not pass or fail
by the draw, and a property that one of those examples breaks is pinned as a known bug next
to it. ``HYPOTHESIS_PROFILE=explore`` draws at random, and more, to hunt for new cases.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
