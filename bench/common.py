"""Helpers shared by benchmark suites: percentiles and writing results as JSON."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {
        "suite": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpu": platform.machine()},
        **data,
    }
    out.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    print(f"wrote {out}")
    return out


def write_section(name: str, key: str, section: Any, *, append: bool = False) -> Path:
    """Put ``section`` under ``key`` of ``bench/results/<name>.json`` (appended to the list
    there with ``append``), keeping every other section the file holds."""
    out = RESULTS / f"{name}.json"
    data = json.loads(out.read_text()) if out.exists() else {}
    if append:
        data.setdefault(key, []).append(section)
    else:
        data[key] = section
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out
