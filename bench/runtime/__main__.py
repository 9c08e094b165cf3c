"""``python -m bench.runtime``: measures the containerd runtime side by side with ``ctr``.

Everything runs in one process against one private containerd and registry:

* pull of a ~64 MB single-layer image (random bytes): ours vs ``ctr images pull --plain-http``,
  each trial pulling a *fresh* image of the same size (containerd shares content across
  namespaces, so re-pulling one image would measure nothing); the order alternates per trial;
* create-to-running latency (create + start of a busybox sleeper), P50/P95;
* stop latency of a container that handles SIGTERM, P50/P95;
* 50 containers created and started at once: time until all run, peak RSS of this process.

Targets: pull <= 1.2x ctr; create-to-running P50 <= 100 ms; stop P50 <= 100 ms; 50 at once
<= 10 s; RSS < 100 MB.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import write_results
from cloudless.devenv import (
    PrivateContainerd,
    PrivateRegistry,
    build_busybox_image,
    build_random_image,
    containerd_available,
    registry_available,
    remove_cgroups,
)
from cloudless.runtime.containerd import ContainerdRuntime

TRIALS = int(os.environ.get("BENCH_RUNTIME_TRIALS", "5"))


async def bench_pull(cd: PrivateContainerd, reg: PrivateRegistry, tmp: Path) -> dict[str, Any]:
    ours: list[float] = []
    ctr: list[float] = []
    for trial in range(TRIALS):
        a = await build_random_image(reg, "rand-ours", f"t{trial}")
        b = await build_random_image(reg, "rand-ctr", f"t{trial}")

        async def run_ours(ref: str = a, trial: int = trial) -> float:
            rt = ContainerdRuntime(
                cd.address,
                data_dir=tmp / "agent",
                namespace=f"pull-ours-{trial}",
                registry=reg.registry_config(),
            )
            t = time.perf_counter()
            await rt.pull_image(ref)
            dt = time.perf_counter() - t
            await rt.close()
            return dt

        async def run_ctr(ref: str = b, trial: int = trial) -> float:
            argv = ["ctr", "-a", cd.address, "-n", f"pull-ctr-{trial}", "images", "pull"]
            t = time.perf_counter()
            p = await asyncio.create_subprocess_exec(
                *argv, "--plain-http", ref, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            _, err = await p.communicate()
            dt = time.perf_counter() - t
            if p.returncode != 0:
                raise RuntimeError(f"ctr pull failed: {err.decode()[-400:]}")
            return dt

        if trial % 2 == 0:
            ours.append(await run_ours())
            ctr.append(await run_ctr())
        else:
            ctr.append(await run_ctr())
            ours.append(await run_ours())
        print(f"pull trial {trial}: ours {ours[-1]:.3f}s ctr {ctr[-1]:.3f}s", flush=True)
    ratio = statistics.median(ours) / statistics.median(ctr)
    return {
        "image_bytes": 64 << 20,
        "trials": TRIALS,
        "ours_s": ours,
        "ctr_s": ctr,
        "ours_median_s": statistics.median(ours),
        "ctr_median_s": statistics.median(ctr),
        "ratio_median": ratio,
        "target_ratio": 1.2,
        "ok": ratio <= 1.2,
    }


async def main() -> int:
    if not (containerd_available() and registry_available()):
        print("containerd/runc/docker-registry not installed; cannot benchmark", file=sys.stderr)
        return 1
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cl-bench-rt-", ignore_cleanup_errors=True) as tmp_s:
        tmp = Path(tmp_s)
        async with (
            PrivateRegistry(root_dir=tmp / "reg") as reg,
            PrivateContainerd(tmp / "cd") as cd,
        ):
            image = await build_busybox_image(reg, "busybox", "1")
            pull = await bench_pull(cd, reg, tmp)
            # The managing process is measured alone: image building above inflates this
            # process's RSS, so lifecycle and burst run in a fresh child (``managed``).
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.runtime.managed",
                cd.address,
                image,
                str(tmp / "agent"),
                stdout=subprocess.PIPE,
            )
            out, _ = await child.communicate()
            if child.returncode != 0:
                raise RuntimeError("bench.runtime.managed failed")
            managed = json.loads(out.decode().strip().splitlines()[-1])
            lifecycle, burst = managed["lifecycle"], managed["burst"]
            print(lifecycle, burst, sep="\n", flush=True)
        for ns in ("bench",):
            remove_cgroups(f"/cloudless/{ns}")
    write_results(
        "runtime",
        {
            "command": "python -m bench.runtime",
            # The machine is shared: 1-minute load average (2 cores) before and after the run.
            "load_average": {"start": load_start, "end": os.getloadavg()[0]},
            "containerd": "1.6.20 (Debian), runc 1.1.5, cgroup v1, overlayfs",
            "pull_64mb": pull,
            **lifecycle,
            "burst_50": burst,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
