"""One object-store node assembled from its parts (metadata, blocks, engine, S3 front), and
a helper to serve it on a loopback port in a background thread (for tests, benchmarks and
tools that drive it with a synchronous client such as boto3)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from cloudless.lib.clock import Clock, SystemClock
from cloudless.objectstore.blocks import BlockStore
from cloudless.objectstore.engine import MIN_PART_SIZE, Engine
from cloudless.objectstore.local import LocalBlocks, LocalStore
from cloudless.objectstore.metadb import MetaDb
from cloudless.objectstore.s3.iam import AccessKey, Iam
from cloudless.objectstore.s3.server import S3Server
from cloudless.store.protocol import Store

T = TypeVar("T")


@dataclass
class Node:
    name: str
    meta: MetaDb
    blocks: BlockStore
    engine: Engine
    iam: Iam
    server: S3Server

    @classmethod
    def open(
        cls,
        name: str,
        data_dir: Path,
        store: Store,
        clock: Clock,
        *,
        min_part_size: int = MIN_PART_SIZE,
    ) -> Node:
        data_dir.mkdir(parents=True, exist_ok=True)
        meta = MetaDb(data_dir / "meta.db", name)
        blocks = BlockStore(data_dir / "blocks", meta)
        blocks.remove_temps()
        local = LocalStore(meta, blocks, clock)
        engine = Engine(local, LocalBlocks(blocks), clock, min_part_size=min_part_size)
        iam = Iam(store, clock)
        return cls(name, meta, blocks, engine, iam, S3Server(engine, iam, clock))


class ThreadedNode:
    """A node serving S3 on ``127.0.0.1:<port>`` from its own event loop thread."""

    def __init__(self, data_dir: Path, store_factory: Any, *, min_part_size: int = MIN_PART_SIZE):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.data_dir = data_dir
        self.clock = SystemClock()
        self.store: Store = self.call(self._make_store(store_factory))
        self.node = Node.open("n1", data_dir, self.store, self.clock, min_part_size=min_part_size)
        self.runner = web.AppRunner(self.node.server.app(), access_log=None)
        self.call(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.call(site.start())
        self.port: int = self.runner.addresses[0][1]

    @staticmethod
    async def _make_store(factory: Any) -> Store:
        store: Store = factory()
        return store

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_key(self, name: str) -> AccessKey:
        return self.call(self.node.iam.create_key(name))

    def close(self) -> None:
        self.call(self.runner.cleanup())
        self.call(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.node.meta.close()
