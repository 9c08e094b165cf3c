"""``bench.objectstore.timeline``: reading the probes' spans into per-PUT steps."""

from pathlib import Path

import pytest

from bench.objectstore.timeline import read_spans, steps

GATEWAY = [
    ("s3", 10.000, 10.008),
    ("put_one", 10.001, 10.005),
    ("together", 10.001, 10.005),
    ("batch", 10.0015, 10.004),  # answered first
    ("batch", 10.0017, 10.0045),
    ("commit", 10.005, 10.0075),
    ("write", 10.005, 10.0075),
    ("merge", 10.0052, 10.007),
    ("merge", 10.0053, 10.0072),
    ("s3", 9.0, 9.001),  # before the measurement: not counted
]
REPLICA = [("serve_batch", 10.0025, 10.0035), ("serve_merge", 10.006, 10.0064)]
OTHER = [("serve_batch", 10.0027, 10.0036), ("serve_merge", 10.0061, 10.0066)]


def test_steps_are_read_from_the_start_of_each_s3_request() -> None:
    found = steps({1: GATEWAY, 2: REPLICA, 3: OTHER}, after=9.5)
    ms = {k: round(v[0] * 1000, 3) for k, v in found.items()}
    assert len(found["s3 took"]) == 1
    assert ms["s3 took"] == 8.0
    assert ms["batch at"] == 1.5 and ms["batch took"] == 2.5  # the first answer
    assert ms["merge at"] == 5.2 and ms["merge took"] == 1.8
    assert ms["serve_batch at"] == 2.5 and ms["serve_batch took"] == 1.0  # the first start
    assert ms["serve_merge at"] == 6.0 and ms["serve_merge took"] == pytest.approx(0.4)
    assert ms["commit at"] == 5.0 and ms["together took"] == 4.0


def test_spans_are_read_per_process(tmp_path: Path) -> None:
    (tmp_path / "41.txt").write_text("s3 1.5 2.5\nbatch 1.6 2.0\n")
    (tmp_path / "42.txt").write_text("")
    assert read_spans(tmp_path) == {41: [("s3", 1.5, 2.5), ("batch", 1.6, 2.0)]}
