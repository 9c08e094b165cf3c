"""The engine's seams over several nodes: every metadata row and block lives on the nodes a
layout version assigns to its partition; writes wait for a write quorum, reads merge a read
quorum (``quorum.py``). The local node is called directly, peers through ``rpc.Peer``.

Contracts:

* ``put`` stamps ``max(now, newest seen by a read quorum + 1)`` and is acknowledged only after
  ``W`` replicas merged it; otherwise it raises ``ServiceUnavailable`` (the write may still
  have landed on fewer replicas: LWW makes a retry safe);
* ``entry``/``range`` merge the answers of at least ``Rq`` replicas, and write the winner back
  to a replica that answered with an older state (read repair);
* a write returns as soon as a write quorum of every live version acknowledged it (quorum
  early return); the calls to the other replicas go on in the background (``Cluster``
  keeps them and cancels them on ``close``), their failures left to anti-entropy;
* reads ask every owner and return once a read quorum answered (the slower calls finish in
  the background); while this node is catching up after downtime, its own copy of a
  partition it has not settled yet (``catching_up``) is not used for reads, and its peer
  RPC refuses reads of it.
* ``together`` does a round's blocks, fresh rows and reads with one call per node, each item
  under the quorum rule it would have alone.

* during a layout transition (several live versions in the ``LayoutHistory``) a write goes to
  the union of every live version's owners and needs a write quorum *in each* version; reads
  use ``read_version()``, the newest version whose nodes have all synced, so a value written
  during the transition is readable under either version (Garage's update trackers);
* with ``hints`` on (the default at R=2), an owner that does not answer a write is replaced
  for that write by a fallback node keeping a hint (``handoff.py``), and the hint counts
  toward the write quorum.

Moving existing rows and blocks to new owners is ``sync.py``; repairing replicas that
drifted apart is ``antientropy.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import BinaryIO, TypeVar

from cloudless.objectstore import quorum
from cloudless.objectstore.blocks import CorruptBlock, MissingBlock, NowhereBlock, block_hash
from cloudless.objectstore.crdt import Entry, merge, next_timestamp
from cloudless.objectstore.handoff import HintStore, fallbacks
from cloudless.objectstore.history import LayoutHistory
from cloudless.objectstore.layout import PARTITIONS, LayoutVersion, partition_of
from cloudless.objectstore.local import LocalStore
from cloudless.objectstore.metadb import DiskFull
from cloudless.objectstore.records import PUTTING
from cloudless.objectstore.rpc import BatchRequest, Peer, PeerError
from cloudless.objectstore.seams import Commit

T = TypeVar("T")
log = logging.getLogger(__name__)


class Cluster:
    """This node's view of the others: the layout and a ``Peer`` per remote node."""

    def __init__(
        self,
        me: str,
        local: LocalStore,
        layout: LayoutVersion | LayoutHistory,
        peers: dict[str, Peer],
        *,
        hints: HintStore | None = None,
        hinted_handoff: bool | None = None,
    ):
        self.me = me
        self.local = local
        self.history = layout if isinstance(layout, LayoutHistory) else _single(layout)
        self.peers = peers
        self.hints = hints
        self.hinted_handoff = (
            self.layout.replication == 2 if hinted_handoff is None else hinted_handoff
        ) and hints is not None
        self._tables: dict[str, ReplicatedTable] = {}
        self.catching_up: set[int] = set()
        """Partitions whose copy here may be stale (this node is back from downtime and
        has not settled them with another owner yet): reads skip its own copy there."""
        self._background: set[asyncio.Task[object]] = set()

    @property
    def serving_reads(self) -> bool:
        """Whether every partition's copy here may answer reads; setting it False closes
        them all (a node back from downtime), True opens them all."""
        return not self.catching_up

    @serving_reads.setter
    def serving_reads(self, on: bool) -> None:
        self.catching_up = set() if on else set(range(PARTITIONS))

    def readable(self, partition: int | None = None) -> bool:
        """Whether this node's copy of ``partition`` (None: of every partition) may answer
        a read now."""
        return not self.catching_up if partition is None else partition not in self.catching_up

    def own_copy(self, partition: int | None = None) -> None:
        """Raise ``PeerError`` if this node's copy (of ``partition``) may not answer a read
        now."""
        if not self.readable(partition):
            raise PeerError(f"{self.me} is catching up after downtime")

    async def close(self) -> None:
        """Cancel the replica calls still running after their writes returned."""
        for t in list(self._background):
            t.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("background replica write failed: %s", task.exception())

    def write_done(self, partition: int) -> Callable[[set[str]], bool]:
        """Whether the acknowledged nodes make a write quorum in every live version."""
        versions = self.history.write_versions()

        def enough(acked: set[str]) -> bool:
            return all(
                sum(1 for n in v.partitions[partition] if n in acked)
                >= quorum.write_quorum(v.replication)
                for v in versions
            )

        return enough

    async def cover(
        self,
        partition: int,
        missed: dict[str, str],
        keep_local: Callable[[str], Awaitable[None]],
        keep_remote: Callable[[Peer, str], Awaitable[None]],
    ) -> dict[str, str]:
        """Ask fallback nodes to keep hints for the owners in ``missed``; returns the owners
        still uncovered (with why)."""
        if not self.hinted_handoff or not missed:
            return missed
        owners = self.write_targets(partition)
        spare = fallbacks(partition, owners, sorted(self.layout.roles))
        left: dict[str, str] = {}
        for owner, why in missed.items():
            refused: list[str] = []
            while spare:
                fb = spare.pop(0)
                try:
                    if fb == self.me:
                        await keep_local(owner)
                    elif fb in self.peers:
                        await keep_remote(self.peers[fb], owner)
                    else:
                        refused.append(f"{fb}: no address")
                        continue
                    break
                except (PeerError, OSError) as e:  # OSError: this node's disk (DiskFull)
                    refused.append(str(e))
                    continue
            else:
                tried = f" ({'; '.join(refused)})" if refused else " (no fallback node)"
                left[owner] = f"{why}; no fallback took a hint{tried}"
        return left

    @property
    def layout(self) -> LayoutVersion:
        """The newest live layout version."""
        assert self.history.current is not None
        return self.history.current

    def set_history(self, history: LayoutHistory) -> None:
        if history.current is None:
            raise ValueError("a cluster needs at least one layout version")
        self.history = history

    def nodes(self, partition: int) -> tuple[str, ...]:
        """The owners reads ask: those of the newest fully synced version."""
        v = self.history.read_version()
        assert v is not None
        return v.partitions[partition]

    @property
    def replication(self) -> int:
        v = self.history.read_version()
        assert v is not None
        return v.replication

    def write_targets(self, partition: int) -> tuple[str, ...]:
        """Every live version's owners of ``partition``, each once."""
        out: list[str] = []
        for v in self.history.write_versions():
            out += [n for n in v.partitions[partition] if n not in out]
        return tuple(out)

    def check_writes(self, what: str, partition: int, failed: dict[str, str]) -> None:
        """A write quorum in every live version, or ``ServiceUnavailable`` naming it."""
        for v in self.history.write_versions():
            owners = v.partitions[partition]
            missed = {n: failed[n] for n in owners if n in failed}
            label = what if len(self.history.versions) == 1 else f"{what} (layout v{v.version})"
            quorum.check(label, quorum.write_quorum(v.replication), owners, missed)

    async def each(
        self,
        nodes: tuple[str, ...],
        local: Callable[[], Awaitable[T]],
        remote: Callable[[Peer], Awaitable[T]],
        *,
        enough: Callable[[set[str]], bool] | None = None,
    ) -> tuple[dict[str, T], dict[str, str]]:
        """Run the call on every node; answers and failures by node. With ``enough``, return
        once the nodes that answered satisfy it; the others continue in the background and
        appear in neither dict (as they do when this call is cancelled)."""

        async def one(n: str) -> T:
            if n == self.me:
                # one turn of the event loop first: the peers' calls, started before this
                # one, get their requests on the wire (aiohttp writes a body from a task of
                # its own) while this node does its share, which does not yield
                await asyncio.sleep(0)
                return await local()
            peer = self.peers.get(n)
            if peer is None:
                raise PeerError(f"no address for node {n}")
            return await remote(peer)

        nodes = tuple(sorted(nodes, key=lambda n: n == self.me))  # this node's call last
        outcomes: dict[str, object]
        if enough is None:
            results = await asyncio.gather(*(one(n) for n in nodes), return_exceptions=True)
            outcomes = dict(zip(nodes, results, strict=True))
        else:
            tasks: dict[asyncio.Future[T], str] = {asyncio.ensure_future(one(n)): n for n in nodes}
            pending: set[asyncio.Future[T]] = set(tasks)
            outcomes = {}
            try:
                while pending and not enough({n for n, r in outcomes.items() if _answer(r)}):
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for t in done:
                        exc = t.exception()
                        outcomes[tasks[t]] = exc if exc is not None else t.result()
            finally:
                # after the early return, and when the caller is cancelled (its upload cut
                # off): the calls still running are kept, and closed, with the others
                for t in pending:
                    self._background.add(t)  # type: ignore[arg-type]
                    t.add_done_callback(self._finished)  # type: ignore[arg-type]
        ok: dict[str, T] = {}
        failed: dict[str, str] = {}
        for n, r in outcomes.items():
            if isinstance(r, PeerError | MissingBlock | CorruptBlock | OSError):
                failed[n] = str(r)
                if isinstance(r, DiskFull):
                    self.local.disk_full(r)
            elif isinstance(r, BaseException):
                raise r
            else:
                ok[n] = r  # type: ignore[assignment]  # an answer of ``one``: a T
        return ok, failed

    async def together(
        self,
        reads: Sequence[tuple[str, str, int]],
        fresh: Sequence[tuple[str, str, int, bytes | None]],
        blocks: Sequence[tuple[str, bytes]],
        now_ms: int,
    ) -> list[Entry | None]:
        """One round: ``blocks`` written, ``fresh`` rows ``(table, pk, partition, value)``
        written blind (as ``put(fresh=True)``) and ``reads`` ``(table, pk, partition)``
        answered (as ``entry``), with one call per node for all of it. Returns once every
        write has a write quorum in every live version and every read a read quorum (the
        other calls go on in the background), with the same errors and hinted handoff as
        the separate calls."""
        rows = [(t, pk, part, Entry(now_ms, self.me, v)) for t, pk, part, v in fresh]
        read_nodes = [self.nodes(part) for _, _, part in reads]
        parts = [part for _, _, part, _ in rows] + [
            partition_of(bytes.fromhex(h)) for h, _ in blocks
        ]
        write_nodes = [self.write_targets(p) for p in parts]
        involved = tuple(dict.fromkeys(n for ns in (*read_nodes, *write_nodes) for n in ns))
        wrote: set[str] = set()
        answers: dict[str, dict[int, Entry | None]] = {}
        refused: dict[str, str] = {}

        def share(n: str) -> tuple[list[int], list[int], list[int]]:
            """The reads, rows and blocks node ``n`` holds (indexes)."""
            nr = len(rows)
            return (
                [i for i, ns in enumerate(read_nodes) if n in ns],
                [i for i in range(nr) if n in write_nodes[i]],
                [i for i in range(len(blocks)) if n in write_nodes[nr + i]],
            )

        async def local() -> None:
            r, w, b = share(self.me)
            for i in b:
                await self.local.blocks.write(*blocks[i])
            if w:
                self.local.apply_many([rows[i] for i in w])
            wrote.add(self.me)
            if r:
                if not self.serving_reads:
                    refused[self.me] = f"{self.me} is catching up after downtime"
                    return
                answers[self.me] = {i: self.local.raw(reads[i][0]).entry(reads[i][1]) for i in r}

        requests: dict[tuple[tuple[int, ...], ...], BatchRequest] = {}

        async def remote(p: Peer) -> None:
            r, w, b = share(p.name)

            def request(w: list[int]) -> BatchRequest:
                return BatchRequest(
                    [reads[i][:2] for i in r], [rows[i] for i in w], [blocks[i] for i in b]
                )

            key = (tuple(r), tuple(w), tuple(b))
            if key not in requests:  # peers holding the same items share one packed body
                requests[key] = request(w)
            try:
                reply = await p.batch(requests[key])
            except PeerError as e:
                # A node from before the ``putting`` table (a rolling upgrade) refuses the
                # whole batch for it: it gets the batch without that row, a best-effort
                # trace (``Engine.settle_putting``), rather than failing the write.
                kept = [i for i in w if rows[i][0] != PUTTING]
                if len(kept) == len(w) or f"table {PUTTING!r} is not replicated" not in str(e):
                    raise
                reply = await p.batch(request(kept))
            wrote.add(p.name)
            if r:
                if reply.reads is None:
                    refused[p.name] = reply.reads_refused or "reads refused"
                    return
                answers[p.name] = dict(zip(r, reply.reads, strict=True))

        need = quorum.read_quorum(self.replication)
        done = [self.write_done(p) for p in parts]

        def enough(_: set[str]) -> bool:
            return all(ok(wrote) for ok in done) and all(
                sum(1 for n in ns if n in answers) >= need for ns in read_nodes
            )

        _, failed = await self.each(involved, local, remote, enough=enough)
        await self._cover_together(rows, blocks, parts, write_nodes, failed)
        out: list[Entry | None] = []
        for i, (t, pk, part) in enumerate(reads):
            nodes = read_nodes[i]
            missed = {n: why for n, why in (failed | refused).items() if n in nodes}
            quorum.check(f"read {t}/{pk}", need, nodes, missed)
            got = {n: a[i] for n, a in answers.items() if i in a}
            out.append(await self.table(t).settle(pk, part, got))
        return out

    async def _cover_together(
        self,
        rows: list[tuple[str, str, int, Entry]],
        blocks: Sequence[tuple[str, bytes]],
        parts: list[int],
        write_nodes: list[tuple[str, ...]],
        failed: dict[str, str],
    ) -> None:
        """Hints for the owners whose batch failed (as the separate writes keep them), then
        a write quorum per item or ``ServiceUnavailable``."""
        for i, part in enumerate(parts):
            missed = {n: why for n, why in failed.items() if n in write_nodes[i]}
            if i < len(rows):
                t, pk, _, e = rows[i]
                left = await self.cover_row(t, pk, part, e, missed)
                self.check_writes(f"write {t}/{pk}", part, left)
            else:
                h, data = blocks[i - len(rows)]
                left = await self.cover_block(h, data, part, missed)
                self.check_writes(f"write block {h}", part, left)

    async def cover_row(
        self, table: str, pk: str, part: int, e: Entry, missed: dict[str, str]
    ) -> dict[str, str]:
        """``cover`` for a row: the fallbacks keep it as a hint."""
        hints = self.hints

        async def keep_local(owner: str) -> None:
            assert hints is not None
            hints.add(owner, table, pk, part, e)

        return await self.cover(
            part, missed, keep_local, lambda p, owner: p.hint(owner, table, [(pk, part, e)])
        )

    async def cover_block(
        self, h: str, data: bytes, part: int, missed: dict[str, str]
    ) -> dict[str, str]:
        """``cover`` for a block: the fallbacks keep it as a hint."""
        hints = self.hints

        async def keep_local(owner: str) -> None:
            assert hints is not None
            await hints.add_block(owner, h, data)

        return await self.cover(
            part, missed, keep_local, lambda p, owner: p.put_block(h, data, for_node=owner)
        )

    def table(self, name: str) -> ReplicatedTable:
        if name not in self._tables:
            self._tables[name] = ReplicatedTable(self, name)
        return self._tables[name]


class ReplicatedTable:
    def __init__(self, cluster: Cluster, name: str) -> None:
        self.c = cluster
        self.name = name
        self.rows = cluster.local.raw(name)

    async def _write(
        self, pk: str, partition: int, e: Entry
    ) -> dict[str, tuple[Entry | None, Entry] | None]:
        """Write ``e`` to a write quorum of every live version; returns each acknowledging
        owner's (before, after) merge states (None: the peer did not say)."""

        async def local() -> tuple[Entry | None, Entry] | None:
            return self.c.local.apply(self.name, pk, partition, e)

        async def remote(p: Peer) -> tuple[Entry | None, Entry] | None:
            replies = await p.merge(self.name, [(pk, partition, e)])
            return None if replies is None else replies[0]

        nodes = self.c.write_targets(partition)
        acked, failed = await self.c.each(nodes, local, remote, enough=self.c.write_done(partition))
        failed = await self.c.cover_row(self.name, pk, partition, e, failed)
        self.c.check_writes(f"write {self.name}/{pk}", partition, failed)
        return acked

    async def entry(self, pk: str, partition: int) -> Entry | None:
        nodes = self.c.nodes(partition)

        async def local() -> Entry | None:
            self.c.own_copy(partition)
            return self.rows.entry(pk)

        need = quorum.read_quorum(self.c.replication)
        answers, failed = await self.c.each(
            nodes,
            local,
            lambda p: p.entry(self.name, pk, partition),
            enough=lambda ok: len(ok) >= need,
        )
        quorum.check(f"read {self.name}/{pk}", need, nodes, failed)
        return await self.settle(pk, partition, answers)

    async def settle(
        self, pk: str, partition: int, answers: dict[str, Entry | None]
    ) -> Entry | None:
        """The merge of a read quorum's ``answers`` (by node); a node that answered an older
        state gets the winner written back (read repair) before this returns."""
        winner: Entry | None = None
        for e in answers.values():
            if e is not None:
                winner = merge(winner, e)
        stale = tuple(n for n, e in answers.items() if winner is not None and e != winner)
        if winner is not None and stale:
            await self.c.each(
                stale,
                lambda: self._repair_local(pk, partition, winner),
                lambda p: p.merge(self.name, [(pk, partition, winner)]),
            )
        return winner

    async def _repair_local(self, pk: str, partition: int, e: Entry) -> None:
        self.c.local.merge(self.name, pk, partition, e)

    async def mend_local(self, pk: str, partition: int) -> None:
        """Read ``pk`` at a quorum and merge the winner into this node's copy, whether or not
        this node answered (the scrub's repair of a row damaged here: an intact copy of the
        same write outranks it, ``crdt.outranks``)."""
        winner = await self.entry(pk, partition)
        if winner is not None:
            await self._repair_local(pk, partition, winner)

    async def put(
        self, pk: str, partition: int, value: bytes | None, now_ms: int, *, fresh: bool = False
    ) -> Entry:
        if fresh:
            e = Entry(now_ms, self.c.me, value)
            await self._write(pk, partition, e)
            return e
        return (await self.swap(pk, partition, value, now_ms))[1]

    async def swap(
        self, pk: str, partition: int, value: bytes | None, now_ms: int
    ) -> tuple[Entry | None, Entry]:
        prev = await self.entry(pk, partition)
        return prev, (await self.commit(pk, partition, value, now_ms, prev)).entry

    async def commit(
        self, pk: str, partition: int, value: bytes | None, now_ms: int, prev: Entry | None
    ) -> Commit:
        e = Entry(next_timestamp(now_ms, prev), self.c.me, value)
        acked = await self._write(pk, partition, e)
        replies = tuple(r for r in acked.values() if r is not None)
        return Commit(e, prev, replies, complete=len(replies) == len(acked))

    async def range(
        self,
        partition: int,
        start: str,
        *,
        prefix: str = "",
        limit: int = 1000,
        include_start: bool = True,
        shallow: bool = False,
    ) -> list[tuple[str, Entry]]:
        """``shallow``: object records without their inline bodies (each replica reads
        heads only, ``LwwTable.range(heads=True)``)."""
        nodes = self.c.nodes(partition)

        async def local() -> list[tuple[str, Entry]]:
            self.c.own_copy(partition)
            return self.rows.range(
                start, prefix=prefix, limit=limit, include_start=include_start, heads=shallow
            )

        need = quorum.read_quorum(self.c.replication)
        answers, failed = await self.c.each(
            nodes,
            local,
            lambda p: p.range(
                self.name, start, prefix, limit, include_start, partition, shallow=shallow
            ),
            enough=lambda ok: len(ok) >= need,
        )
        quorum.check(f"list {self.name}/{prefix}", need, nodes, failed)
        merged: dict[str, Entry] = {}
        for rows in answers.values():
            for pk, e in rows:
                merged[pk] = merge(merged.get(pk), e)
        return sorted(merged.items())[:limit]


class ReplicatedBlocks:
    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster

    async def sync(self, hashes: list[str]) -> None:
        """Replicated writes are durable when acknowledged: nothing to do."""

    async def write(self, h: str, data: bytes, *, durable: bool = True) -> None:
        """On a write quorum, each replica's copy as durable as its block store makes a
        durable write (``fsync_blocks``: at once, or by the next flush); ``durable`` is
        ignored."""
        part = partition_of(bytes.fromhex(h))
        nodes = self.c.write_targets(part)

        async def local() -> None:
            await self.c.local.blocks.write(h, data)

        _, failed = await self.c.each(
            nodes, local, lambda p: p.put_block(h, data), enough=self.c.write_done(part)
        )
        failed = await self.c.cover_block(h, data, part, failed)
        self.c.check_writes(f"write block {h}", part, failed)

    async def open(self, h: str) -> BinaryIO | None:
        if self.c.me not in self.c.nodes(partition_of(bytes.fromhex(h))):
            return None
        try:
            return await self.c.local.blocks.open(h)
        except (MissingBlock, CorruptBlock):
            return None

    async def read(self, h: str) -> bytes:
        """Block ``h`` from this node or a replica of the read version, hash-checked. Raises
        ``NowhereBlock`` when every one of them answered that it has not got it,
        ``MissingBlock`` when none served it otherwise (unreachable, corrupt)."""
        nodes = self.c.nodes(partition_of(bytes.fromhex(h)))
        order = sorted(nodes, key=lambda n: n != self.c.me)
        problems = []
        absent = 0
        for n in order:
            try:
                if n == self.c.me:
                    return await self.c.local.blocks.read(h)
                data = await self.c.peers[n].get_block(h)
                if block_hash(data) == h:
                    return data
                problems.append(f"{n}: corrupt copy")
            except MissingBlock as e:
                absent += 1
                problems.append(f"{n}: {e}")
            except (PeerError, CorruptBlock, KeyError) as e:
                problems.append(f"{n}: {e}")
        what = f"block {h}: no replica answered ({'; '.join(problems)})"
        raise NowhereBlock(what) if absent == len(order) else MissingBlock(what)


def _answer(r: object) -> bool:
    return not isinstance(r, BaseException)


def _single(v: LayoutVersion) -> LayoutHistory:
    """A history holding only ``v``, every node synced to it."""
    return LayoutHistory(versions=(v,), synced={n: v.version for n in v.roles})
