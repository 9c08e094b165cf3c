"""``python -m cloudless.devenv up [--root DIR]``: a private containerd and registry with the
busybox image pushed, for trying things by hand (``ctr -a <socket> -n cloudless ...``).

Prints the socket, registry and image reference, then runs until interrupted and cleans up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
from pathlib import Path

from cloudless.devenv.containerd import PrivateContainerd
from cloudless.devenv.images import build_busybox_image
from cloudless.devenv.registry import PrivateRegistry


async def up(root: Path) -> None:
    async with PrivateRegistry(root_dir=root / "registry") as reg:
        async with PrivateContainerd(root / "containerd") as cd:
            image = await build_busybox_image(reg, "busybox", "1")
            print(f"containerd socket: {cd.address}")
            print(f"registry:          {reg.url} (plain HTTP)")
            print(f"busybox image:     {image}")
            print(f"try: ctr -a {cd.address} -n cloudless images pull --plain-http {image}")
            print("Ctrl-C to stop and clean up", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m cloudless.devenv")
    ap.add_argument("command", choices=["up"])
    ap.add_argument("--root", type=Path, help="state directory (default: a new temp dir)")
    ns = ap.parse_args(argv)
    root = ns.root or Path(tempfile.mkdtemp(prefix="cloudless-devenv-"))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(up(root.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
