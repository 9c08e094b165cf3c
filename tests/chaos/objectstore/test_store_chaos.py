"""Store chaos with load: five ``cloudless agent --storage`` processes (zones z1, z2, z3, z1,
z2; R=3) and a coordinator, each in a network namespace of its own
(``tests/integration/objectstore/netns_rig.py``), while four client threads write and read
through random nodes' S3 APIs (boto3 without its own retries):

* small objects (1 B..20 KiB: most inline in metadata, up to ``INLINE_MAX``, the rest one
  small block) and rewrites of one key,
* ~1 MiB objects (one or two blocks),
* multipart uploads (5 MiB + 300 KB; a failed part is retried through another node under the
  same upload id),
* a reader of acknowledged objects (a wrong body or a missing acknowledged key is a
  violation; an error is not).

Faults for ``SECONDS`` (seeded; ``OS_CHAOS_SEED`` replays a run): every 0.7-1.4 s, while fewer than
two nodes are faulted (a killed node counts until it serves again), one on a node not already
faulted: kill -9 (restarted 2-5 s later), a full cut (iptables DROP on its link, inside its
namespace), a freeze (SIGSTOP: its connections stay open and calls to it hang, as on a device
that sleeps; SIGCONT 2-5 s later), a full disk (node-2 and node-4 keep their store on a tmpfs
of their own: a ballast file takes every free byte, removed 2-5 s later) or a one-link cut
between two nodes, healed 2-5 s later; at most one node is down (killed, restarting, frozen,
cut off or out of disk) at a time, so every partition
keeps a write quorum and what fails is what went through a faulted node. Each write tries up
to three nodes (as a client with a list of endpoints would) before it counts as failed.
Then everything is healed and restarted and **every acknowledged PUT is read back and
hash-checked**: zero acknowledged objects lost or corrupted; the rewritten key holds its last
acknowledged value or a later attempt's; no layout change happened (all faults are far shorter
than the grace period); no agent logged an error. ``-s`` prints the counts.
"""

from __future__ import annotations

import errno
import functools
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from cloudless.objectstore.blocks import INLINE_MAX
from cloudless.objectstore.procs import wait_for
from tests.integration.objectstore.netns_rig import (
    PART,
    WHY_NOT,
    NetnsStoreCluster,
    answers,
    netns_store,
    s3,
    sha,
    status,
)

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.netns,
    pytest.mark.timeout(400),
    pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or ""),
]
BUCKET = "chaos"
SECONDS = 30.0
ZONES = ["z1", "z2", "z3", "z1", "z2"]
SMALL_DISKS = (1, 3)
"""Agents (by index) whose store is on a tmpfs of its own, so a fault can fill it."""
BALLAST = "ballast"


@dataclass
class Ledger:
    """What the clients saw: only acknowledged writes are promised."""

    acked: dict[str, str] = field(default_factory=dict)
    """Object name -> sha256 of the body the store acknowledged."""
    failed: int = 0
    rewrites: list[tuple[str, bool]] = field(default_factory=list)
    """Every attempt at the rewritten key, in order: (sha256, acknowledged)."""
    reads_ok: int = 0
    read_errors: int = 0
    attempt_errors: int = 0
    """Single requests that failed (each write tries up to 3 nodes before it counts as failed)."""
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, name: str, digest: str) -> None:
        with self.lock:
            self.acked[name] = digest

    def fail(self) -> None:
        with self.lock:
            self.failed += 1


class Load:
    """The client threads; each has its own boto3 client per node (made up front: creating
    clients is not thread-safe)."""

    def __init__(self, cluster: NetnsStoreCluster, key: Any, seed: int) -> None:
        self.endpoints = [a.s3 for a in cluster.agents]
        self.key = key
        self.seed = seed
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        """When the load started (violations are timed from it, as the faults are)."""
        self.ledger = Ledger()
        self.threads = [
            threading.Thread(target=fn, args=(self._clients(), random.Random(seed + i)))
            for i, fn in enumerate((self.small, self.big, self.multipart, self.reader))
        ]

    def _clients(self) -> list[Any]:
        return [s3(e, self.key, timeout=10) for e in self.endpoints]

    def start(self) -> None:
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)
            assert not t.is_alive(), "a client thread hung"

    def attempt(self, clients: list[Any], rng: random.Random, call: Any, tries: int = 3) -> Any:
        """``call(client)`` through a random node, then through others on an error (as a
        client with a list of endpoints would); raises the last error."""
        for i, c in enumerate(rng.sample(clients, min(tries, len(clients)))):
            try:
                return call(c)
            except Exception:
                with self.ledger.lock:
                    self.ledger.attempt_errors += 1
                if i == tries - 1 or self.stop.is_set():
                    raise
        raise AssertionError("unreachable")

    def put(self, clients: list[Any], rng: random.Random, name: str, data: bytes) -> bool:
        try:
            self.attempt(clients, rng, lambda c: c.put_object(Bucket=BUCKET, Key=name, Body=data))
        except Exception:
            self.ledger.fail()
            return False
        self.ledger.ack(name, sha(data))
        return True

    def small(self, clients: list[Any], rng: random.Random) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            data = os.urandom(rng.randint(1, INLINE_MAX + 4096))
            if n % 5:
                self.put(clients, rng, f"small/{n}", data)
                continue
            # the rewritten key: every attempt recorded, acknowledged or not (one node each)
            try:
                rng.choice(clients).put_object(Bucket=BUCKET, Key="rewritten", Body=data)
                ok = True
            except Exception:
                self.ledger.fail()
                ok = False
            with self.ledger.lock:
                self.ledger.rewrites.append((sha(data), ok))

    def big(self, clients: list[Any], rng: random.Random) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            self.put(clients, rng, f"big/{n}", os.urandom(rng.randint(900_000, 1_200_000)))

    def multipart(self, clients: list[Any], rng: random.Random) -> None:
        """Two-part uploads (5 MiB + 300 KB); each call retried through other nodes under the
        same upload id (a retried part replaces the earlier attempt)."""
        n = 0
        while not self.stop.is_set():
            n += 1
            parts = [os.urandom(PART), os.urandom(300_000)]
            try:
                self._upload(clients, rng, f"mp/{n}", parts)
            except Exception:
                self.ledger.fail()
                continue
            self.ledger.ack(f"mp/{n}", sha(b"".join(parts)))

    def _upload(self, clients: list[Any], rng: random.Random, name: str, parts: list[Any]) -> None:
        up = self.attempt(
            clients, rng, lambda c: c.create_multipart_upload(Bucket=BUCKET, Key=name)
        )["UploadId"]
        etags = []
        for i, p in enumerate(parts):
            r = self.attempt(
                clients,
                rng,
                lambda c, i=i, p=p: c.upload_part(
                    Bucket=BUCKET, Key=name, UploadId=up, PartNumber=i + 1, Body=p
                ),
            )
            etags.append(r["ETag"])
        done = {"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]}
        # not retried: a retry after a completion whose answer was lost gets NoSuchUpload
        rng.choice(clients).complete_multipart_upload(
            Bucket=BUCKET, Key=name, UploadId=up, MultipartUpload=done
        )

    def reader(self, clients: list[Any], rng: random.Random) -> None:
        led = self.ledger
        while not self.stop.is_set():
            with led.lock:
                names = list(led.acked)
            if not names:
                time.sleep(0.2)
                continue
            name = rng.choice(names)
            want = led.acked[name]
            k = rng.randrange(len(clients))
            try:
                got = clients[k].get_object(Bucket=BUCKET, Key=name)["Body"].read()
            except ClientError as e:
                if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                    with led.lock:
                        led.violations.append(
                            f"{name}: acknowledged, then read as missing through node-{k + 1}"
                            f" at {time.monotonic() - self.t0:.1f} s"
                        )
                else:
                    with led.lock:
                        led.read_errors += 1
                continue
            except Exception:
                with led.lock:
                    led.read_errors += 1
                continue
            with led.lock:
                if sha(got) == want:
                    led.reads_ok += 1
                else:
                    led.violations.append(f"{name}: read {len(got)} bytes of other content")


@dataclass
class Faults:
    """Injected faults: at most two nodes faulted at once (a killed node counts until its S3
    API answers again), each fault on nodes not already faulted, and at most one node down
    (killed, starting or cut off) at a time, so every partition keeps a write quorum (the
    other fault is then a one-link cut)."""

    cluster: NetnsStoreCluster
    key: Any
    rng: random.Random
    active: dict[int, tuple[str, float, int | None]] = field(default_factory=dict)
    """Node index -> (kind, heal at (monotonic, from the start), the other end of a cut link);
    kind "starting": restarted after a kill, not serving yet."""
    log: list[str] = field(default_factory=list)

    def busy(self) -> set[int]:
        return set(self.active) | {p for _, _, p in self.active.values() if p is not None}

    def inject(self, now: float) -> None:
        free = [i for i in range(len(self.cluster.agents)) if i not in self.busy()]
        if len(self.busy()) >= 2 or len(free) < 2:
            return
        i = self.rng.choice(free)
        down = any(k != "link" for k, _, _ in self.active.values())
        kinds = ["kill", "cut", "freeze", "link"] + (["full"] if i in SMALL_DISKS else [])
        kind = "link" if down else self.rng.choice(kinds)
        until = now + self.rng.uniform(2.0, 5.0)
        peer = None
        if kind == "kill":
            self.cluster.kill(i)
        elif kind == "cut":
            self.cluster.cut(i)
        elif kind == "freeze":
            self.cluster.freeze(i)
        elif kind == "full":
            fill(store_dir(self.cluster.agents[i].data))
        else:
            peer = self.rng.choice([j for j in free if j != i])
            self.cluster.cut_link(i, peer)
        self.active[i] = (kind, until, peer)
        link = "" if peer is None else f"<->node-{peer + 1}"
        self.log.append(f"{now:.1f} {kind} node-{i + 1}{link}")

    def undo_due(self, now: float) -> None:
        for i, (kind, until, _) in list(self.active.items()):
            if kind == "starting":
                if answers(self.cluster.agents[i].s3, self.key, BUCKET, timeout=2):
                    del self.active[i]
                    self.log.append(f"{now:.1f} node-{i + 1} serves again")
            elif now >= until:
                self.undo(i, kind)
                if kind == "kill":
                    self.active[i] = ("starting", now, None)

    def undo(self, i: int, kind: str) -> None:
        if kind == "kill":
            self.cluster.start_agent(i)
        elif kind == "freeze":
            self.cluster.thaw(i)
        elif kind == "full":
            (store_dir(self.cluster.agents[i].data) / BALLAST).unlink(missing_ok=True)
        elif kind != "starting":
            self.cluster.heal(i)
        del self.active[i]

    def undo_all(self) -> None:
        for i, (kind, _, _) in list(self.active.items()):
            self.undo(i, kind)


def store_dir(data: Path) -> Path:
    return data / "objectstore"


def fill(d: Path) -> None:
    """Take every free byte of the file system under ``d`` (a tmpfs) with one file: in
    steps of 1 MiB, then 4 KiB, each until the disk refuses (the node writes meanwhile)."""
    size = 0
    with open(d / BALLAST, "wb") as f:
        for step in (1 << 20, 4096):
            while True:
                try:
                    os.posix_fallocate(f.fileno(), size, step)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
                size += step


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[NetnsStoreCluster, Any]]:
    mounted: list[Path] = []
    try:
        for i in SMALL_DISKS:  # agent i's store directory (procs.StoreCluster's layout)
            d = store_dir(tmp_path / f"a{i + 1}")
            d.mkdir(parents=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", d], check=True)
            mounted.append(d)
        with netns_store(tmp_path, "x", ZONES, 17, BUCKET) as r:
            yield r
    finally:
        for d in mounted:
            subprocess.run(["umount", "-l", d], check=False)


def fetch(clients: list[Any], n: int, name: str) -> bytes | None:
    """``name``'s body through the nodes in turn from the ``n``-th, None if the store answers
    NoSuchKey; an error is retried through the next node for up to 60 s, then raised."""
    deadline = time.monotonic() + 60
    while True:
        try:
            body: bytes = (
                clients[n % len(clients)].get_object(Bucket=BUCKET, Key=name)["Body"].read()
            )
            return body
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            if time.monotonic() > deadline:
                raise
        except Exception:
            if time.monotonic() > deadline:
                raise
        n += 1
        time.sleep(0.5)


def read_back(cluster: NetnsStoreCluster, key: Any, acked: dict[str, str]) -> dict[str, str]:
    """Every acknowledged object through the nodes in turn; name -> problem for those that do
    not read back hash-identical."""
    clients = [s3(a.s3, key, timeout=30) for a in cluster.agents]
    problems: dict[str, str] = {}
    for n, (name, want) in enumerate(sorted(acked.items())):
        try:
            got = fetch(clients, n, name)
        except Exception as e:
            problems[name] = f"unreadable: {e}"
            continue
        if got is None:
            problems[name] = "lost"
        elif sha(got) != want:
            problems[name] = f"corrupted: {len(got)} bytes of other content"
    return problems


def test_chaos_with_load_loses_no_acknowledged_object(
    rig: tuple[NetnsStoreCluster, Any],
) -> None:
    cluster, key = rig
    seed = int(os.environ.get("OS_CHAOS_SEED", str(random.SystemRandom().randrange(10**6))))
    version = next(line for line in status(cluster) or [] if line.startswith("layout version"))
    load = Load(cluster, key, seed)
    faults = Faults(cluster, key, random.Random(seed))
    load.start()
    t0 = time.monotonic()
    try:
        while (now := time.monotonic()) < t0 + SECONDS:
            faults.undo_due(now - t0)
            faults.inject(now - t0)
            time.sleep(faults.rng.uniform(0.7, 1.4))
    finally:
        faults.undo_all()
        load.join()
    led = load.ledger
    for a in cluster.agents:
        wait_for(functools.partial(answers, a.s3, key, BUCKET), f"{a.name}'s S3 API back", 120)
    problems = read_back(cluster, key, led.acked)
    body = fetch([s3(a.s3, key, timeout=30) for a in cluster.agents], 0, "rewritten")
    final = "lost" if body is None else sha(body)
    last_ack = max((i for i, (_, ok) in enumerate(led.rewrites) if ok), default=None)
    allowed = {d for d, _ in led.rewrites[last_ack or 0 :]}
    kinds = {
        k: sum(f" {k} " in line for line in faults.log)
        for k in ("kill", "cut", "freeze", "full", "link")
    }
    print(
        f"\nstore chaos (seed {seed}, {SECONDS:g} s, faults {kinds}): {len(led.acked)} "
        f"acknowledged ({sum(n.startswith('small/') for n in led.acked)} small, "
        f"{sum(n.startswith('big/') for n in led.acked)} ~1 MiB, "
        f"{sum(n.startswith('mp/') for n in led.acked)} multipart), {led.failed} failed with "
        f"an error, {len(led.acked) - len(problems)} read back OK; "
        f"{sum(ok for _, ok in led.rewrites)}/{len(led.rewrites)} rewrites acknowledged; "
        f"during the run {led.reads_ok} reads OK, {led.read_errors} read errors, "
        f"{led.attempt_errors} failed attempts\n  faults: {'; '.join(faults.log)}"
    )
    assert problems == {}, problems
    assert led.violations == [], led.violations
    # faults are expected, not errors: nothing logged at ERROR (an unexpected exception, an
    # InternalError answered, a task's failure never read)
    errors = [
        f"{a.name}: {line}"
        for a in cluster.agents
        for line in a.log.read_text(errors="replace").splitlines()
        if " ERROR " in line
    ]
    assert errors == [], errors
    # the last acknowledged value or a later attempt's; absent only if none was acknowledged
    assert final in allowed | ({"lost"} if last_ack is None else set()), final
    after = next(line for line in status(cluster) or [] if line.startswith("layout version"))
    assert after == version  # no fault outlived the grace period: no layout change
    # the run did inject faults and carry load (a floor a loaded CI machine still clears)
    assert sum(kinds.values()) >= 6 and len(led.acked) >= 20, (faults.log, len(led.acked))
