"""The demo's object-store step (``cloudless.demo``): the first layout as ``cloudless s3
status`` shows it, ``cloudless s3`` run as the admin, and boto3 against the devices' S3
endpoints, every object written kept with its SHA-256 to check what comes back."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from cloudless.devenv.cluster import NetnsCluster, wait_until
from cloudless.lib.errors import CloudlessError

BUCKET = "demo"


class StoreDemoFailed(CloudlessError):
    code = "demo_failed"


def first_layout(c: NetnsCluster) -> list[str] | None:
    """``cloudless s3 status`` once the layout puts every partition on each of the (up to 3)
    devices, else None."""
    lines = s3_cli(c, "status").splitlines()
    held = [x for x in lines if "256 partitions" in x]
    return lines if len(held) == min(3, c.n_agents) else None


def s3_cli(c: NetnsCluster, *args: str) -> str:
    """Run ``cloudless s3 ARGS`` as the admin (the API, no etcd credentials); its output."""
    cmd = [sys.executable, "-m", "cloudless", "s3", *args, "--config", str(c.admin_config)]
    env = {**os.environ, "COLUMNS": "200"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    if p.returncode != 0:
        raise StoreDemoFailed(f"cloudless s3 {' '.join(args)}: {(p.stdout + p.stderr).strip()}")
    return p.stdout


class DemoStore:
    """The demo's S3 client side: boto3 against the devices' S3 endpoints, every object it
    wrote kept with its SHA-256 to check what comes back."""

    def __init__(
        self, c: NetnsCluster, key_id: str, secret: str, say: Callable[[str], None]
    ) -> None:
        self.c, self.key_id, self.secret, self.say = c, key_id, secret, say
        self.written: dict[str, str] = {}

    def client(self, i: int) -> Any:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        return boto3.client(
            "s3",
            endpoint_url=self.c.s3_endpoint(i),
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            region_name="cloudless",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=3,
                read_timeout=20,
            ),
        )

    def presigned(self, name: str, endpoint: str, expires: int = 3600) -> str:
        """A presigned GET of ``name`` for clients that reach the store at ``endpoint``
        (signed for that host; nothing is sent)."""
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        c = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            region_name="cloudless",
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )
        url: str = c.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": name}, ExpiresIn=expires
        )
        return url

    def _ready(self, i: int) -> bool:
        try:
            self.client(i).head_bucket(Bucket=BUCKET)
            return True
        except Exception:
            return False

    def _put(self, i: int, name: str, data: bytes) -> float:
        t0 = time.monotonic()
        self.client(i).put_object(Bucket=BUCKET, Key=name, Body=data)
        self.written[name] = hashlib.sha256(data).hexdigest()
        return time.monotonic() - t0

    def _first_put(self, i: int, name: str, data: bytes) -> float | None:
        """``_put``, or None while the store answers ``ServiceUnavailable``: right after its
        first layout the nodes take a beat or two to learn each other's registrations and
        open their copies for reads, as any client of a fresh cluster sees (boto3 retries a
        503 by default; the demo's client does not, to show every other error)."""
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        try:
            return self._put(i, name, data)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ServiceUnavailable":
                return None
            raise

    def _check(self, i: int, name: str) -> str:
        got = self.client(i).get_object(Bucket=BUCKET, Key=name)["Body"].read()
        digest = hashlib.sha256(got).hexdigest()
        if digest != self.written[name]:
            raise StoreDemoFailed(f"s3://{BUCKET}/{name} read back from device {i + 1} is corrupt")
        return digest

    async def put_and_get(self, i: int, name: str, data: bytes) -> None:
        url = self.c.s3_endpoint(i)
        await wait_until(f"the S3 API at {url} to accept the key", lambda: self._ready(i), 60)
        took = await wait_until(
            f"the store at {url} to take a write", lambda: self._first_put(i, name, data), 60, 0.5
        )
        self.say(
            f"boto3 put_object s3://{BUCKET}/{name} ({len(data)} bytes) via {url}: "
            f"acknowledged in {took * 1000:.0f} ms"
        )
        j = (i + 1) % self.c.n_agents
        other = self.c.s3_endpoint(j)  # each device's S3 API comes up on its own
        await wait_until(f"the S3 API at {other} to accept the key", lambda: self._ready(j), 60)
        digest = await asyncio.to_thread(self._check, j, name)
        self.say(f"boto3 get_object via {self.c.s3_endpoint(j)}: sha256 {digest[:16]}… matches")

    async def survive(self, dead: int) -> None:
        """After device ``dead`` died: every object reads back hash-identical from a surviving
        device, and a new write is acknowledged (2 of 3 replicas) and reads back."""
        alive = [i for i in range(self.c.n_agents) if i != dead]
        for name in list(self.written):
            digest = await asyncio.to_thread(self._check, alive[0], name)
            self.say(
                f"with device-{dead + 1}'s storage node dead: s3://{BUCKET}/{name} read via "
                f"{self.c.s3_endpoint(alive[0])}, sha256 {digest[:16]}… matches"
            )
        data = os.urandom(1 << 20)  # one block
        took = await asyncio.to_thread(self._put, alive[-1], "after-the-death.bin", data)
        await asyncio.to_thread(self._check, alive[0], "after-the-death.bin")
        self.say(
            f"a new 1 MiB object written via {self.c.s3_endpoint(alive[-1])}: acknowledged "
            f"by 2 of 3 replicas in {took * 1000:.0f} ms, read back (hash-checked) via "
            f"{self.c.s3_endpoint(alive[0])}"
        )
