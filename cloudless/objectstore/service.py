"""The object-store node service: what an agent with storage enabled runs (``Agent.run``).

``StorageService.run()`` opens the node's metadata and blocks under ``data_dir``, serves the
peer RPC on mutual TLS with the node's certificate, and runs, in one TaskGroup:

* the control loop (every ``beat`` seconds): bump this node's registration
  (``members.NODES``), read the layout history and the registry, point the replication
  layer at them (peers by registered address), pull the partitions a new layout version
  gives this node and acknowledge it (``sync.py``), and, on the one acting node, apply the
  churn decision (``members.decide``: first layout, joins, replacement after the grace
  period);
* catch-up after start (``antientropy.catch_up``): a node that ran before, or whose disk
  is new while the layout already reads from it (``must_catch_up``: wiped or replaced),
  serves no quorum reads until it has compared every partition it owns with another owner;
  then anti-entropy rounds and tombstone collection, hinted handoff, block GC, the block
  resync queue (``resync.py``: blocks no replica served during a pull or a scrub repair,
  retried with backoff), the throttled scrub, and on a node that ran before, a check of the
  blocks written just before it stopped (``BlockStore.check_recent``: one truncated by a
  power cut is quarantined and queued for resync);
* the S3 gateway on ``s3_listen`` once a layout exists.

The cluster store is reached through ``store`` (a ``ProxyStore`` over the coordinator in an
agent, any ``Store`` in tests). Every loop takes its time from the injected clock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
from aiohttp import web

from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError
from cloudless.lib.waits import within
from cloudless.objectstore import lifecycle
from cloudless.objectstore.antientropy import TOMBSTONE_GRACE_S, AntiEntropy
from cloudless.objectstore.blocks import BlockStore, MissingBlock
from cloudless.objectstore.engine import MIN_PART_SIZE, ORPHAN_AFTER_S, Engine
from cloudless.objectstore.handoff import Handoff, HintStore
from cloudless.objectstore.history import LayoutHistory, observed, sync_may_start
from cloudless.objectstore.layout import PARTITIONS, NodeRole
from cloudless.objectstore.layout_store import LayoutStore
from cloudless.objectstore.lifecycle import EVERY_S as LIFECYCLE_EVERY_S
from cloudless.objectstore.lifecycle import Expirer, acting_node
from cloudless.objectstore.local import LocalStore
from cloudless.objectstore.members import (
    NODES,
    Presence,
    StorageNode,
    absent_nodes,
    actor,
    decide,
    default_grace,
)
from cloudless.objectstore.metadb import MetaDb
from cloudless.objectstore.records import OBJECTS, partition
from cloudless.objectstore.replication import Cluster, ReplicatedBlocks
from cloudless.objectstore.resync import BlockResync
from cloudless.objectstore.rpc import Peer, RpcServer, session
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.s3.iam import Iam
from cloudless.objectstore.s3.server import S3Server
from cloudless.objectstore.scrub import Scrubber
from cloudless.objectstore.sync import PartitionSync
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.security.tls import client_ssl_context, server_ssl_context
from cloudless.store.errors import StoreError
from cloudless.store.protocol import Store

log = logging.getLogger(__name__)
GC_BATCH = 64
"""Blocks the GC deletes per event-loop step (each an unlink and a few statements)."""
TRANSITION_BEAT_S = 1.0
"""The control beat while a layout transition waits for the nodes' acknowledgements."""
RECENT_WINDOW_S = 60.0
"""Blocks whose files changed this long before the last ``alive`` mark are re-read at
start: the mark is written every beat, blocks are flushed every ``block_flush_s``, and the
file system commits its journal every few seconds, so a block whose fsync a power cut
prevented is always within it."""


@dataclass(frozen=True)
class NodeTls:
    node: str
    trust_domain: str
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes


CACHE_BYTES = 24 << 20
"""``StorageConfig.cache_bytes`` by default: 8 MiB of rows, 16 MiB of small blocks."""


@dataclass
class StorageConfig:
    data_dir: Path
    zone: str
    capacity: int
    """Bytes offered to the store; 0 makes this node a gateway (S3 only, no data)."""
    rpc_host: str = "127.0.0.1"
    rpc_port: int = 0
    advertise: str = ""
    """The address peers reach this node at (default: ``rpc_host``)."""
    s3_host: str = "127.0.0.1"
    s3_port: int = 0
    s3_domains: tuple[str, ...] = ()
    """Root domains for virtual-host-style S3 requests (``<bucket>.<domain>``)."""
    replication: int = 3
    """For the first layout only; later changes keep the layout's own."""
    grace_s: float | None = None
    """Absent longer than this, a node is replaced; default 15 min at R=3, 5 min at R=2."""
    beat_s: float = 5.0
    anti_entropy_s: float = 60.0
    tombstone_grace_s: float = TOMBSTONE_GRACE_S
    block_gc_s: float = 60.0
    repair_rate: float = 64 << 20
    """Bytes per second of blocks pulled by sync and anti-entropy (0: unthrottled)."""
    min_part_size: int = MIN_PART_SIZE
    fsync_blocks: bool = False
    """fsync every block before acknowledging it; off: blocks are flushed every
    ``block_flush_s`` (an acknowledged write is in W zones' page caches meanwhile, and the
    metadata row that makes it visible is SQLite WAL with ``synchronous=NORMAL`` either
    way)."""
    block_flush_s: float = 1.0
    lifecycle_s: float = LIFECYCLE_EVERY_S
    """Seconds between lifecycle sweeps (expiry and abort rules) of each bucket this node
    acts for (``lifecycle.acting_node``)."""
    cache_bytes: int = CACHE_BYTES
    """Memory for what the node holds between requests: a third for metadata rows, the rest
    for small blocks (0: nothing held; every read goes to SQLite and the disk)."""


@dataclass
class Status:
    """What this node knows, for logs and tests."""

    layout_version: int = 0
    synced_version: int = 0
    serving_reads: bool = False
    decision: str = ""
    peers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Figures:
    """This node's gauges for its ``/metrics`` page (``StorageService.figures``); -1: not
    known yet."""

    disk_free: int = -1
    disk_size: int = -1
    refusing_writes: bool = False
    serving_reads: bool = False
    catching_up: int = 0
    """Partitions whose copy here is not read yet (back from downtime, not compared)."""
    resync_pending: int = 0
    """Blocks waiting in the resync queue."""
    hints_pending: int = 0
    """Rows and blocks this node keeps for owners that were down (R=2 handoff)."""
    layout_version: int = 0


def reads_from(history: LayoutHistory, node: str) -> bool:
    """Whether reads of ``history`` go to ``node`` (it holds partitions of the read
    version)."""
    v = history.read_version()
    return v is not None and node in v.holders


def must_catch_up(returning: bool, placed_before_start: bool) -> bool:
    """Whether a starting node must compare its partitions with other owners before it
    serves reads. ``returning``: it ran before (the ``alive`` marker its beats keep exists),
    so it may have missed writes. ``placed_before_start``: the first layout history it read
    already read from it although its data directory has no trace of a previous run: a
    wiped or replaced disk of a node still in the layout, whose rows are all missing (a node
    that joins, or starts a cluster, registers before any layout places it). A node on
    empty data that no layout reads from has nothing stale to serve."""
    return returning or placed_before_start


class StorageService:
    def __init__(
        self,
        config: StorageConfig,
        tls: NodeTls,
        store: Store,
        clock: Clock,
        gateway: Callable[[], str | None] = lambda: None,
    ) -> None:
        """``gateway``: the device's container bridge address while its container network is
        up (None otherwise); registered as ``s3_gateway`` when S3 serves on every address."""
        self.cfg = config
        self.tls = tls
        self.store = store
        self.clock = clock
        self.me = tls.node
        self.layouts = LayoutStore(store)
        self.registry = NODES.bind(store)
        self.presence = Presence()
        self.status = Status()
        self.rpc_port = config.rpc_port
        self.s3_port = config.s3_port
        self.cluster: Cluster | None = None
        self.resync: BlockResync | None = None
        self._nowhere: dict[str, float] = {}
        """Blocks every old owner said it does not hold, and since when (``sync.py``)."""
        self._sync_failed: dict[int, tuple[int, ...]] = {}
        """The partitions of a layout version the last sync left failed (the next beat
        pulls only those)."""
        self.hints: HintStore | None = None
        self.peers: dict[str, Peer] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.known: set[str] = set()
        self._silent: set[str] = set()
        """Nodes the last control round heard no beat from for 3 beats (the lifecycle
        sweep's acting node is the first owner not among them)."""
        self._beat = 0
        self._layout_ready = asyncio.Event()
        self._caught_up = asyncio.Event()
        self._returning = False
        self._placed_before_start: bool | None = None
        """Whether the layout history this process first read already read from this node
        (None until it read one)."""
        self._last_alive: float | None = None
        self._s3_serving = False
        self.gateway = gateway
        self.local: LocalStore | None = None

    # ---- assembly ------------------------------------------------------------------------

    def _open(self) -> LocalStore:
        d = self.cfg.data_dir
        d.mkdir(parents=True, exist_ok=True)
        rows = self.cfg.cache_bytes // 3
        meta = MetaDb(d / "meta.db", self.me, checkpoint_in_background=True, row_cache_bytes=rows)
        blocks = BlockStore(
            d / "blocks",
            meta,
            fsync_each=self.cfg.fsync_blocks,
            small_cache_bytes=self.cfg.cache_bytes - rows,
        )
        blocks.remove_temps()
        return LocalStore(meta, blocks, self.clock)

    def _readable(self, partition: int | None = None) -> bool:
        """Whether peers may read this node's copy (of ``partition``): once caught up, or
        for a partition the catch-up already settled."""
        if self._caught_up.is_set():
            return True
        c = self.cluster
        return c is not None and partition is not None and c.readable(partition)

    def _allowed(self, peer: SpiffeId) -> bool:
        return (
            peer.kind is CertKind.NODE
            and peer.trust_domain == self.tls.trust_domain
            and peer.name in self.known
        )

    def _host(self, bound: str) -> str:
        host = self.cfg.advertise or bound
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"[{host}]" if ":" in host else host

    def _url(self) -> str:
        return f"https://{self._host(self.cfg.rpc_host)}:{self.rpc_port}"

    def _s3_url(self) -> str:
        return f"http://{self._host(self.cfg.s3_host)}:{self.s3_port}" if self.s3_port else ""

    def _s3_gateway(self) -> str:
        if not self._s3_serving or self.cfg.s3_host not in ("0.0.0.0", ""):
            return ""
        ip = self.gateway()
        return f"{ip}:{self.s3_port}" if ip else ""

    async def run(self) -> None:
        local = self.local = self._open()
        self._returning = (self.cfg.data_dir / "alive").exists()
        self._last_alive = self._read_alive() if self._returning else None
        hints = self.hints = HintStore(local)
        t = self.tls
        server = RpcServer(local, self._allowed, hints, readable=self._readable)
        rpc = web.AppRunner(server.app(), access_log=None, shutdown_timeout=0.5)
        await rpc.setup()
        ctx = server_ssl_context(t.cert_pem, t.key_pem, t.ca_pem)
        await web.TCPSite(rpc, self.cfg.rpc_host, self.rpc_port, ssl_context=ctx).start()
        self.rpc_port = rpc.addresses[0][1]
        s3 = web.AppRunner(web.Application(), access_log=None)
        client = session(client_ssl_context(t.cert_pem, t.key_pem, t.ca_pem))
        log.info("object store node %s: peer RPC on %s", self.me, self._url())
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._control(local, client))
                await self._layout_ready.wait()
                s3 = await self._serve_s3(local, hints, client, tg)
                await self._register_now()  # the S3 service gains this node without a beat
                await asyncio.Event().wait()
        finally:
            if self._s3_serving:  # the S3 service drops this node at once, not when stale
                self._s3_serving = False
                await self._register_now()
            if self.cluster is not None:
                await self.cluster.close()
            await local.blocks.flush()
            await s3.cleanup()
            await rpc.cleanup()
            for peer in self.peers.values():
                await peer.close()
            await client.close()
            local.meta.close()

    async def _serve_s3(
        self,
        local: LocalStore,
        hints: HintStore,
        client: aiohttp.ClientSession,
        tg: asyncio.TaskGroup,
    ) -> web.AppRunner:
        """Start the data-plane loops and the S3 front once the first layout is known."""
        assert self.cluster is not None
        c = self.cluster
        resync = self.resync
        assert resync is not None
        ae = AntiEntropy(
            c,
            self.clock,
            interval=self.cfg.anti_entropy_s,
            tombstone_grace=self.cfg.tombstone_grace_s,
            repair_rate=self.cfg.repair_rate,
            resync=resync,
        )
        resync.pace = ae.sync.pace
        if self._last_alive is not None:
            tg.create_task(self._check_recent_blocks(local, resync, self._last_alive))
        tg.create_task(self._catch_up_then(ae))
        tg.create_task(resync.run())
        tg.create_task(Handoff(hints, self.peers, self.clock).run())
        tg.create_task(self._block_gc(local))
        tg.create_task(self._flush_blocks(local))

        async def repair(h: str) -> bytes:
            try:
                return await ReplicatedBlocks(c).read(h)
            except MissingBlock as e:
                resync.queue(h, f"scrub found it corrupt; {e}")
                raise

        scrub = Scrubber(
            local.blocks,
            self.clock,
            repair=repair,
            objects=local.raw(OBJECTS),
            repair_row=c.table(OBJECTS).mend_local,
        )
        tg.create_task(scrub.run())
        engine = Engine(c, ReplicatedBlocks(c), self.clock, min_part_size=self.cfg.min_part_size)
        iam = Iam(self.store, self.clock)
        front = S3Server(engine, iam, self.clock, domains=self.cfg.s3_domains)
        if self.cfg.capacity > 0:
            tg.create_task(self._lifecycle(Expirer(engine, self.clock), iam))
        runner = web.AppRunner(front.app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, self.cfg.s3_host, self.s3_port).start()
        self.s3_port = runner.addresses[0][1]
        self._s3_serving = True
        log.info("object store node %s: S3 API on %s", self.me, self._s3_url())
        return runner

    async def _lifecycle(self, expirer: Expirer, iam: Iam) -> None:
        """Every ``lifecycle_s``, sweep each bucket with rules this node acts for, and settle
        the old ``putting`` rows of the partitions it acts for; from once this node is
        caught up (its listings are then complete)."""
        await self._caught_up.wait()
        while True:
            try:
                await self.lifecycle_once(expirer, iam)
                await self.settle_once(expirer.engine)
            except Exception:  # a bug here must not stop the node: said, tried again later
                log.exception("lifecycle sweep failed; the next one is in %.0f s",
                              self.cfg.lifecycle_s)  # fmt: skip
            await self.clock.sleep(self.cfg.lifecycle_s)

    async def settle_once(self, engine: Engine) -> None:
        """Release the versions writers left behind (``Engine.settle_putting``) in the
        partitions this node acts for (``lifecycle.acting_node``)."""
        c = self.cluster
        if c is None:
            return
        committed = released = 0
        for p in range(PARTITIONS):
            if acting_node(c.history.current, p, self._silent) != self.me:
                continue
            try:
                done = await engine.settle_putting(
                    p, self.clock.now(), older_than=ORPHAN_AFTER_S, limit=lifecycle.PER_SWEEP
                )
            except (S3Error, CloudlessError, OSError) as e:  # the next sweep tries again
                log.warning("settling abandoned uploads of partition %d: %s", p, e)
                continue
            committed, released = committed + done[0], released + done[1]
        if released:
            log.info("%d versions abandoned by writers that died mid-upload released (%d "
                     "committed ones checked)", released, committed)  # fmt: skip

    async def lifecycle_once(self, expirer: Expirer, iam: Iam) -> None:
        c = self.cluster
        if c is None:
            return
        try:
            buckets = await iam.buckets_with_rules()
        except StoreError as e:
            log.warning("lifecycle: the bucket list is not readable: %s", e)
            return
        for b in buckets:
            layout = c.history.current
            if acting_node(layout, partition(b.name), self._silent) != self.me:
                continue
            try:
                done = await expirer.sweep(b.name, lifecycle.decode(b.lifecycle))
            except (S3Error, CloudlessError, OSError) as e:  # the next sweep tries again
                log.warning("lifecycle sweep of bucket %s: %s", b.name, e)
                continue
            if done.deleted or done.aborted or done.kept:
                log.info("lifecycle of bucket %s: %d objects deleted, %d uploads aborted, "
                         "%d rewritten since found due (kept)", b.name, done.deleted,
                         done.aborted, done.kept)  # fmt: skip

    def _read_alive(self) -> float:
        """When this node last marked itself alive (0 if the marker is unreadable: every
        block is then checked)."""
        try:
            return float((self.cfg.data_dir / "alive").read_text().strip())
        except (OSError, ValueError):
            return 0.0

    async def _check_recent_blocks(
        self, local: LocalStore, resync: BlockResync, last_alive: float
    ) -> None:
        """Re-read the blocks written in the last ``RECENT_WINDOW_S`` before this node
        stopped (its fsync may not have happened) and queue the bad ones for resync."""
        since = last_alive - RECENT_WINDOW_S
        bad = await asyncio.to_thread(local.blocks.check_recent, since)
        for h in bad:
            resync.queue(h, "truncated or corrupt after the node stopped")
        if bad:
            log.warning("%d blocks written just before the last stop were bad; queued", len(bad))

    def _mark_alive(self) -> None:
        """Replace the marker whole (a full disk leaves the last one as it was)."""
        marker = self.cfg.data_dir / "alive"
        tmp = marker.with_name("alive.tmp")
        tmp.write_text(f"{self.clock.now():.0f}\n")
        os.replace(tmp, marker)

    async def _catch_up_then(self, ae: AntiEntropy) -> None:
        assert self.cluster is not None
        if self.cluster.serving_reads:
            log.info("nothing to catch up: this node starts fresh")
        while not self.cluster.serving_reads:
            r = await ae.catch_up()
            if self.cluster.serving_reads:
                log.info(
                    "caught up: %d partitions compared, %d differed, %d rows and %d blocks"
                    " (%d bytes) pulled, %d bytes moved in all",
                    r.partitions,
                    r.differed,
                    r.rows,
                    r.blocks,
                    r.block_bytes,
                    r.traffic,
                )
                break
            log.info("catching up: %d partitions met no other owner yet", len(r.unreached))
            await self.clock.sleep(self.cfg.beat_s)
        self._caught_up.set()
        self.status.serving_reads = True
        await ae.run()

    async def _block_gc(self, local: LocalStore) -> None:
        while True:
            gone = 0
            try:
                while len(batch := local.blocks.collect(self.clock.now(), GC_BATCH)) == GC_BATCH:
                    gone += len(batch)
                    await asyncio.sleep(0)  # on the loop, as writes start: see blocks.py
                gone += len(batch)
            except OSError as e:  # its queue is in SQLite: the next round goes on
                if not local.noted_full(e, "block GC"):
                    log.warning("block GC: %s; retrying in %.0f s", e, self.cfg.block_gc_s)
            if gone:
                log.info("block GC: %d unreferenced blocks removed", gone)
            await self.clock.sleep(self.cfg.block_gc_s)

    async def _flush_blocks(self, local: LocalStore) -> None:
        """Every ``block_flush_s``: fsync the blocks written since, and checkpoint the
        metadata WAL (both in threads: no fsync on the event loop)."""
        while True:
            try:
                await local.blocks.flush()
            except OSError as e:
                if not local.noted_full(e, "a block flush"):
                    log.warning(
                        "block flush failed: %s; retrying in %.0f s", e, self.cfg.block_flush_s
                    )
            try:
                await asyncio.to_thread(local.meta.checkpoint)
            except sqlite3.Error as e:
                if not local.noted_full(e, "a metadata checkpoint"):
                    log.warning("metadata checkpoint failed: %s; retrying", e)
            await self.clock.sleep(self.cfg.block_flush_s)

    # ---- control -------------------------------------------------------------------------

    async def _control(self, local: LocalStore, client: aiohttp.ClientSession) -> None:
        while True:
            try:
                await self.control_once(local, client)
            except (StoreError, OSError) as e:
                log.warning("object store control: %s; retrying in %.0f s", e, self._beat_s())
            await self.clock.sleep(self._beat_s())

    async def control_once(self, local: LocalStore, client: aiohttp.ClientSession) -> None:
        """One beat: register, refresh the layout and peers, sync and act on churn."""
        await self._register()
        try:
            await asyncio.to_thread(self._mark_alive)
        except OSError as e:  # the beat goes on: the layout and peers must still be followed
            if not local.noted_full(e, "its alive marker"):
                log.warning("object store: could not mark this node alive: %s", e)
        history = await self.layouts.show()
        if self._placed_before_start is None:
            self._placed_before_start = reads_from(history, self.me)
        nodes = {r.name: r.value for r in (await self.registry.list()).records}
        self.known = set(nodes)
        self._update_peers(nodes, client)
        now = self.clock.monotonic()
        self.presence.observe(nodes, now)
        cur = history.current
        rep = cur.replication if cur else self.cfg.replication
        grace = self.cfg.grace_s if self.cfg.grace_s is not None else default_grace(rep)
        names = set(nodes) | (set(cur.roles) if cur else set())
        absent = absent_nodes(self.presence, names - {self.me}, now, grace)
        self._silent = absent_nodes(self.presence, names - {self.me}, now, 3 * self.cfg.beat_s)
        if actor(nodes, absent) == self.me:
            d = decide(history, nodes, absent, self.cfg.replication)
            self.status.decision = d.why
            if d.change is not None:
                history = await self._apply(history, d.change.roles, d.change.replication, d.why)
        if history.current is None:
            return
        if self.cluster is None:
            self.cluster = Cluster(self.me, local, history, self.peers, hints=self.hints)
            self.resync = BlockResync(local.blocks, self.clock, ReplicatedBlocks(self.cluster).read)
            self.cluster.serving_reads = not must_catch_up(
                self._returning, bool(self._placed_before_start)
            )
            self._layout_ready.set()
        else:
            self.cluster.set_history(history)
        history = await self._observe(history)
        await self._sync(history)
        self.status.layout_version = history.version()
        self.status.synced_version = history.synced.get(self.me, 0)

    async def _apply(
        self,
        history: LayoutHistory,
        roles: Mapping[str, NodeRole | None],
        replication: int | None,
        why: str,
    ) -> LayoutHistory:
        try:
            new, plan = await self.layouts.apply_change(
                roles,
                replication,
                history.version(),
            )
        except CloudlessError as e:
            log.info("layout change (%s) not applied: %s", why, e)
            return history
        log.info("layout v%d applied (%s): %d partition copies move", new.version(), why,
                 len(plan.moves))  # fmt: skip
        return new

    async def _register(self) -> None:
        self._beat += 1
        free, size = self._disk()
        me = StorageNode(
            self.me,
            self.cfg.zone,
            self.cfg.capacity,
            self._url(),
            self._s3_url(),
            self._beat,
            self._s3_gateway(),
            disk_free=free,
            disk_size=size,
            refusing_writes=self.local is not None and self.local.refusing_writes(),
        )
        await self.registry.put(self.me, me)

    def _disk(self) -> tuple[int, int]:
        """(free, total) bytes of the file system under the data directory; -1 unknown."""
        try:
            disk = shutil.disk_usage(self.cfg.data_dir)
        except OSError:
            return -1, -1
        return disk.free, disk.total

    def figures(self) -> Figures:
        """The gauges of this node now (a few statements on its SQLite, a ``statvfs``)."""
        local = self.local
        if local is None:
            return Figures()
        free, size = self._disk()
        c = self.cluster
        return Figures(
            disk_free=free,
            disk_size=size,
            refusing_writes=local.refusing_writes(),
            serving_reads=self.status.serving_reads,
            catching_up=len(c.catching_up) if c is not None else 0,
            resync_pending=self.resync.count() if self.resync is not None else 0,
            hints_pending=self.hints.count() if self.hints is not None else 0,
            layout_version=self.status.layout_version,
        )

    async def _register_now(self) -> None:
        """Register outside the beat, best effort (the next beat registers anyway)."""
        try:
            await within(2.0, self._register())
        except (StoreError, OSError, TimeoutError) as e:
            log.info("object store registration: %s", e)

    def _update_peers(self, nodes: dict[str, StorageNode], client: aiohttp.ClientSession) -> None:
        for name, n in nodes.items():
            if name == self.me:
                continue
            p = self.peers.get(name)
            if p is None or p.url != n.rpc_url:
                expect = SpiffeId.node(name, self.tls.trust_domain)
                self.peers[name] = Peer(name, n.rpc_url, client, expect, timeout=10.0)
                if p is not None:  # its call stream goes to the old address
                    closing = asyncio.create_task(p.close())
                    self._closing.add(closing)
                    closing.add_done_callback(self._closing.discard)
        self.status.peers = {n: p.url for n, p in sorted(self.peers.items())}

    async def _observe(self, history: LayoutHistory) -> LayoutHistory:
        """Acknowledge the version this node now writes to and the one it reads from (the
        cluster runs on ``history`` already), so older versions are dropped only once no
        node reads them (``history.observe``)."""
        cur, rv = history.current, history.read_version()
        assert cur is not None and rv is not None and self.cluster is not None
        if self.me not in cur.roles or observed(history, self.me, cur.version, rv.version):
            return history
        try:
            new = await self.layouts.observe(self.me, cur.version, rv.version)
        except StoreError:
            raise
        except CloudlessError as e:  # a report the stored history refuses: said, not fatal
            log.warning("layout acknowledgement refused: %s", e)
            return history
        self.cluster.set_history(new)
        return new

    def _beat_s(self) -> float:
        """The control beat: faster while a layout transition waits for the nodes' acks."""
        c = self.cluster
        if c is not None and len(c.history.versions) > 1:
            return min(self.cfg.beat_s, TRANSITION_BEAT_S)
        return self.cfg.beat_s

    async def _sync(self, history: LayoutHistory) -> None:
        """Pull what the newest version gives this node, then acknowledge it; the pull
        starts once every node of the version has seen it (``sync_may_start``)."""
        cur = history.current
        assert cur is not None and self.cluster is not None
        if history.synced.get(self.me, 0) >= cur.version:
            return
        holds = any(self.me in p for p in cur.partitions)
        if holds and len(history.versions) > 1:
            if not sync_may_start(history):
                return
            sync = PartitionSync(
                self.cluster, self.clock, self.cfg.repair_rate, self.resync, self._nowhere
            )
            retry = self._sync_failed.get(cur.version)
            report = await sync.sync_to(cur, only=retry)
            self._sync_failed = {cur.version: report.failed}
            if report.failed:
                log.info("layout v%d: %d partitions not synced yet", cur.version,
                         len(report.failed))  # fmt: skip
                return
            log.info("layout v%d synced: %d partitions, %d rows, %d blocks (%d bytes)%s",
                     cur.version, report.partitions, report.rows, report.blocks,
                     sync.block_bytes,
                     f"; {report.lost} blocks on no replica" if report.lost else "")  # fmt: skip
        new = await self.layouts.ack_synced(self.me, cur.version)
        self.cluster.set_history(new)


def with_ports(cfg: StorageConfig, rpc_port: int, s3_port: int) -> StorageConfig:
    return replace(cfg, rpc_port=rpc_port, s3_port=s3_port)
