"""Several object-store nodes in one process on loopback, talking over mutual TLS with
certificates from a throwaway cluster CA: for replication tests and benchmarks.

``kill(name)`` stops a node's peer server at once (its in-flight calls fail); the node's data
stays on disk and ``restart(name)`` serves it again on the same port. A node's peer server
refuses reads of the partitions its ``Cluster`` is catching up on, as a service's does.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from cloudless.lib.clock import Clock, SystemClock
from cloudless.objectstore import history as h
from cloudless.objectstore.assign import assign
from cloudless.objectstore.blocks import BlockStore
from cloudless.objectstore.engine import MIN_PART_SIZE, Engine
from cloudless.objectstore.handoff import Handoff, HintStore
from cloudless.objectstore.layout import LayoutVersion, NodeRole
from cloudless.objectstore.local import LocalStore
from cloudless.objectstore.metadb import MetaDb
from cloudless.objectstore.replication import Cluster, ReplicatedBlocks
from cloudless.objectstore.rpc import Peer, RpcServer, session
from cloudless.security.ca import CertificateAuthority
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.security.tls import client_ssl_context, server_ssl_context

TRUST_DOMAIN = "cloudless.test"


@dataclass
class LoopbackNode:
    name: str
    local: LocalStore
    runner: web.AppRunner
    port: int
    client: aiohttp.ClientSession
    server_ssl: ssl.SSLContext
    hints: HintStore
    engine: Engine | None = None
    cluster: Cluster | None = None
    handoff: Handoff | None = None
    alive: bool = True


@dataclass
class LoopbackCluster:
    base: Path
    roles: dict[str, NodeRole]
    replication: int
    clock: Clock = field(default_factory=SystemClock)
    min_part_size: int = MIN_PART_SIZE
    fsync_blocks: bool = True
    """As ``StorageConfig.fsync_blocks`` (off: ``BlockStore.flush`` syncs them)."""
    nodes: dict[str, LoopbackNode] = field(default_factory=dict)
    layout: LayoutVersion | None = None

    async def start(self) -> LoopbackCluster:
        ca = CertificateAuthority.init(
            self.base / "ca", trust_domain=TRUST_DOMAIN, root_key_size=2048
        )

        for name in sorted(self.roles):
            key, cert = ca.issue(
                SpiffeId.node(name, TRUST_DOMAIN), CertKind.NODE, ip_addresses=("127.0.0.1",)
            )
            meta = MetaDb(self.base / name / "meta.db", name) if self._mkdir(name) else None
            assert meta is not None
            blocks = BlockStore(self.base / name / "blocks", meta, fsync_each=self.fsync_blocks)
            local = LocalStore(meta, blocks, self.clock)
            hints = HintStore(local)
            server_ssl = server_ssl_context(cert, key, ca.bundle_pem)
            runner = await self._serve(name, local, hints, server_ssl, 0)
            port = runner.addresses[0][1]
            client = session(client_ssl_context(cert, key, ca.bundle_pem))
            self.nodes[name] = LoopbackNode(name, local, runner, port, client, server_ssl, hints)
        plan = assign(self.roles, self.replication)
        self.layout = LayoutVersion(1, self.replication, dict(self.roles), plan.partitions)
        for name, node in self.nodes.items():
            peers = {
                other: Peer(
                    other,
                    f"https://127.0.0.1:{o.port}",
                    node.client,
                    SpiffeId.node(other, TRUST_DOMAIN),
                    timeout=5.0,
                )
                for other, o in self.nodes.items()
                if other != name
            }
            node.cluster = Cluster(name, node.local, self.layout, peers, hints=node.hints)
            node.handoff = Handoff(node.hints, peers, self.clock)
            node.engine = Engine(
                node.cluster,
                ReplicatedBlocks(node.cluster),
                self.clock,
                min_part_size=self.min_part_size,
            )
        return self

    async def _serve(
        self, name: str, local: LocalStore, hints: HintStore, ctx: ssl.SSLContext, port: int
    ) -> web.AppRunner:
        names = {SpiffeId.node(n, TRUST_DOMAIN) for n in self.roles}

        def readable(partition: int | None = None) -> bool:
            """As a service's: peers read a copy its node is not catching up on."""
            node = self.nodes.get(name)
            return node is None or node.cluster is None or node.cluster.readable(partition)

        server = RpcServer(local, lambda peer: peer in names, hints, readable=readable)
        runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
        return runner

    async def restart(self, name: str) -> None:
        """Serve a killed node again on its old port, with the data it had."""
        node = self.nodes[name]
        if not node.alive:
            node.runner = await self._serve(
                name, node.local, node.hints, node.server_ssl, node.port
            )
            node.alive = True

    def _mkdir(self, name: str) -> bool:
        (self.base / name).mkdir(parents=True, exist_ok=True)
        return True

    def engine(self, name: str) -> Engine:
        e = self.nodes[name].engine
        assert e is not None
        return e

    async def kill(self, name: str) -> None:
        node = self.nodes[name]
        if node.alive:
            node.alive = False
            await node.runner.cleanup()

    async def close(self) -> None:
        for node in self.nodes.values():
            if node.alive:
                await node.runner.cleanup()
            if node.cluster is not None:
                for peer in node.cluster.peers.values():
                    await peer.close()
            await node.client.close()
            node.local.meta.close()


class ThreadedCluster:
    """A ``LoopbackCluster`` on its own event-loop thread with an S3 front on every node
    (``endpoint(name)``), for synchronous clients such as boto3."""

    def __init__(self, base: Path, roles: dict[str, NodeRole], replication: int) -> None:
        import asyncio
        import threading

        from cloudless.objectstore.s3.iam import Iam
        from cloudless.objectstore.s3.server import S3Server
        from cloudless.store.memory import MemoryStore

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cluster = LoopbackCluster(base, roles, replication)
        self.call(self.cluster.start())
        self.store = MemoryStore(self.cluster.clock)
        self.iam = Iam(self.store, self.cluster.clock)
        self.fronts: dict[str, tuple[web.AppRunner, int]] = {}
        for name in self.cluster.nodes:
            server = S3Server(self.cluster.engine(name), self.iam, self.cluster.clock)
            runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=0.1)
            self.call(runner.setup())
            self.call(web.TCPSite(runner, "127.0.0.1", 0).start())
            self.fronts[name] = (runner, runner.addresses[0][1])

    def call(self, coro: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def endpoint(self, name: str) -> str:
        return f"http://127.0.0.1:{self.fronts[name][1]}"

    def close(self) -> None:
        for runner, _ in self.fronts.values():
            self.call(runner.cleanup())
        self.call(self.cluster.close())
        self.call(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def three_zones(capacity: int = 100 * 10**9) -> dict[str, NodeRole]:
    """Storage nodes n1, n2, n3, one per zone (zone1..zone3), of ``capacity`` bytes each."""
    return {f"n{i}": NodeRole(f"zone{i}", capacity) for i in range(1, 4)}


@contextlib.asynccontextmanager
async def running(
    root: Path, roles: dict[str, NodeRole], replication: int
) -> AsyncIterator[LoopbackCluster]:
    """A started ``LoopbackCluster`` under ``root``, closed when the block ends."""
    c = await LoopbackCluster(root, roles, replication=replication).start()
    try:
        yield c
    finally:
        await c.close()


def synced(hist: h.LayoutHistory, version: int, nodes: Iterable[str]) -> h.LayoutHistory:
    """``nodes`` saw layout ``version`` and synced it, as their beats acknowledge (each still
    reading from the version it read before)."""
    for n in nodes:
        rv = hist.read_version()
        assert rv is not None
        hist = h.ack_synced(h.observe(hist, n, version, rv.version), n, version)
    return hist


def finished(hist: h.LayoutHistory, version: int, nodes: Iterable[str]) -> h.LayoutHistory:
    """``nodes`` saw layout ``version``, synced it and read from it."""
    nodes = list(nodes)
    hist = synced(hist, version, nodes)
    for n in nodes:
        hist = h.observe(hist, n, version, version)
    return hist
