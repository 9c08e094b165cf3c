"""Differential test: random operation sequences on MemoryStore and on real etcd must give
the same answers (revisions compared relative to each store's starting revision).

This is what "MemoryStore faithfully models etcd" means, checked rather than claimed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import uuid
from typing import Any

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.store.errors import StoreError
from cloudless.store.etcd import EtcdStore
from cloudless.store.memory import MemoryStore
from cloudless.store.protocol import Store
from cloudless.store.types import Compare, Delete, Get, KeyValue, Put, TxnOp
from cloudless.testing.etcd import BlockingEtcd, TestPki

SEEDS = int(os.environ.get("STORE_DIFF_SEEDS", "12"))
KEYS = ["a", "b", "c", "c/1", "c/2"]


@dataclasses.dataclass
class Ctx:
    """One store's frame of reference: its starting revision and the leases it granted."""

    base: int
    leases: list[int] = dataclasses.field(default_factory=list)

    def lease_index(self, lease_id: int) -> int:
        return self.leases.index(lease_id) + 1 if lease_id else 0


def norm(x: Any, ctx: Ctx) -> Any:
    """Shift every revision in ``x`` by ``-base`` (0 stays 0: "none"); leases by index."""
    base = ctx.base
    if isinstance(x, KeyValue):
        shift = {
            f: (getattr(x, f) - base if getattr(x, f) else 0)
            for f in ("create_revision", "mod_revision")
        }
        return dataclasses.replace(x, lease=ctx.lease_index(x.lease), **shift)
    if isinstance(x, tuple | list):
        return type(x)(norm(i, ctx) for i in x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        out = {}
        for f in dataclasses.fields(x):
            v = getattr(x, f.name)
            out[f.name] = v - base if f.name == "revision" and v else norm(v, ctx)
        return type(x)(**out)
    return x


class Script:
    """One random operation per call, described relative to the store's base revision."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.rel_rev = 0  # writes so far (upper bound of relative revisions)
        self.compacted_rel = 0  # history before this is gone
        self.leases = 0  # leases granted so far (referred to by 1-based index)

    def _lease(self) -> int:
        if self.leases and self.rng.random() < 0.3:
            return self.rng.randrange(1, self.leases + 1)
        return 0

    def _op(self) -> TxnOp:
        r = self.rng
        k = r.choice(KEYS)
        kind = r.random()
        if kind < 0.5:
            return Put(k, r.choice([b"", b"x", b"y", b"zz"]), self._lease())
        if kind < 0.75:
            return Delete(k, prefix=r.random() < 0.3)
        return Get(k, prefix=r.random() < 0.3)

    def _compare(self) -> tuple[str, str, str, Any]:
        r = self.rng
        k = r.choice(KEYS)
        target = r.choice(["value", "version", "create_revision", "mod_revision"])
        op = r.choice(["==", "!=", "<", ">"])
        if target == "value":
            return (k, target, op, r.choice([b"", b"x", b"y"]))
        if target == "version":
            return (k, target, op, r.randrange(0, 4))
        return (k, target, op, ("rel", r.randrange(0, self.rel_rev + 2)))

    def next(self) -> tuple[str, Any]:
        r = self.rng.random()
        if r < 0.55:
            ok_ops = [self._op() for _ in range(self.rng.randrange(1, 4))]
            fail_ops = [self._op() for _ in range(self.rng.randrange(0, 3))]
            cmps = [self._compare() for _ in range(self.rng.randrange(0, 3))]
            return ("txn", (cmps, ok_ops, fail_ops))
        if r < 0.72:
            return ("put", (self.rng.choice(KEYS), b"p%d" % self.rng.randrange(3), self._lease()))
        if r < 0.75:
            if self.leases and self.rng.random() < 0.5:
                return ("revoke", self.rng.randrange(1, self.leases + 1))
            self.leases += 1
            return ("grant", None)
        if r < 0.85:
            return ("delete", (self.rng.choice(KEYS), self.rng.random() < 0.3))
        if r < 0.93:
            return ("list_at", self.rng.randrange(0, self.rel_rev + 1))
        if r < 0.96 and self.rel_rev >= 1:
            return ("compact", self.rng.randrange(1, self.rel_rev + 2))
        return ("get", self.rng.choice(KEYS))


async def apply(store: Store, prefix: str, ctx: Ctx, step: tuple[str, Any]) -> Any:
    name, arg = step
    base = ctx.base

    def key(k: str) -> str:
        return prefix + k

    def lease(i: int) -> int:
        return ctx.leases[i - 1] if i else 0

    def fix(op: TxnOp) -> TxnOp:
        if isinstance(op, Put):
            return dataclasses.replace(op, key=key(op.key), lease=lease(op.lease))
        return dataclasses.replace(op, key=key(op.key))

    try:
        if name == "txn":
            cmps, ok_ops, fail_ops = arg
            compares = []
            for k, target, op, operand in cmps:
                if isinstance(operand, tuple):
                    operand = base + operand[1] if operand[1] else 0
                compares.append(getattr(Compare, target)(key(k), op, operand))
            res = await store.txn(compares, [fix(o) for o in ok_ops], [fix(o) for o in fail_ops])
            return ("txn", norm(res, ctx))
        if name == "put":
            return ("put", (await store.put(key(arg[0]), arg[1], lease=lease(arg[2]))) - base)
        if name == "grant":
            ctx.leases.append((await store.grant_lease(60)).id)
            return ("grant", len(ctx.leases))
        if name == "revoke":
            await store.revoke_lease(lease(arg))
            return ("revoke", await store.lease_ttl(lease(arg)))
        if name == "delete":
            return ("delete", await store.delete(key(arg[0]), prefix=arg[1]))
        if name == "get":
            return ("get", norm(await store.get(key(arg)), ctx))
        if name == "compact":
            await store.compact(base + arg)
            return ("compact", None)
        if name == "list_at":
            rev = base + arg if arg else 0
            listing = await store.list(prefix, revision=rev)
            return ("list", norm(listing, ctx))
    except StoreError as e:
        return ("error", type(e).__name__)
    raise AssertionError(name)


@pytest.mark.parametrize("seed", range(SEEDS))
async def test_memory_matches_etcd(seed: int, etcd_server: tuple[BlockingEtcd, TestPki]) -> None:
    etcd, pki = etcd_server
    real = EtcdStore(etcd.endpoints, pki.client())
    real.page_size = 2
    fake = MemoryStore(FakeClock())
    prefix = f"/diff/{uuid.uuid4().hex[:8]}/"
    real_ctx, fake_ctx = Ctx(await real.revision()), Ctx(await fake.revision())
    base_real, base_fake = real_ctx.base, fake_ctx.base
    script = Script(seed)
    try:
        for i in range(40):
            step = script.next()
            got_fake = await apply(fake, prefix, fake_ctx, step)
            got_real = await apply(real, prefix, real_ctx, step)
            assert got_fake == got_real, f"seed {seed} step {i}: {step}"
            if step[0] == "compact" and got_fake == ("compact", None):
                script.compacted_rel = max(script.compacted_rel, step[1])
            script.rel_rev = (await fake.revision()) - base_fake
            assert (await real.revision()) - base_real == script.rel_rev
        # and the whole history, as a watch from the start replays it (with prev_kv)
        frm, upto = script.compacted_rel + 1, script.rel_rev
        events_fake = await history(fake, prefix, fake_ctx, frm, upto)
        events_real = await history(real, prefix, real_ctx, frm, upto)
        assert events_fake == events_real, f"seed {seed}: watch histories differ"
    finally:
        for lease_id in real_ctx.leases:  # an expiry later would write into another seed's run
            await real.revoke_lease(lease_id)
        await real.close()


async def history(store: Store, prefix: str, ctx: Ctx, frm: int, upto: int) -> Any:
    """Every event from ``base + frm`` to ``base + upto`` (after the compaction point)."""
    base = ctx.base
    if upto < frm:
        return []
    out: list[Any] = []
    try:
        async with contextlib.aclosing(
            store.watch(prefix, start_revision=base + frm, prev_kv=True)
        ) as batches:
            async for batch in batches:
                out.extend(norm(e, ctx) for e in batch.events)
                if batch.events[-1].revision >= base + upto:
                    return out
    except StoreError as e:
        return ("error", type(e).__name__)
    raise AssertionError("watch ended early")
