"""``import cloudless.store`` loads neither gRPC nor the etcd client (the package docstring's
promise): the etcd-backed pieces are imported from their own modules by who needs them."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_store_package_loads_no_grpc() -> None:
    code = (
        "import sys, cloudless.store\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'etcd3aio')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
