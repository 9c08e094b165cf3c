"""The object store's share of the cluster store, for nodes that have no etcd credentials.

Storage and gateway nodes keep the layout, their registrations, access keys and buckets in
the cluster store like every other component, but an agent holds only its node certificate.
So the coordinator answers one gRPC call (``AgentControl.StoreProxy``) carrying a JSON
``get``, ``list`` or ``txn`` and runs it on its own store after ``check``:

* reads: only keys under ``READ_PREFIXES`` (layout, storage-node registry, keys, buckets);
* writes: the layout record, the caller's *own* registry record and buckets (S3
  CreateBucket/DeleteBucket), nothing else: a node cannot mint access keys or speak for
  another node's registration;
* every refusal is a ``ProxyRefused`` naming the key and the rule;
* values read pass through ``reveal`` (the coordinator opens sealed access-key secrets there,
  ``s3.iam.reveal``: the store holds them sealed, a node needs them to check signatures).

``ProxyStore`` is the node side: a ``Store`` whose ``get``/``list``/``txn``/``put``/``delete``
go through a ``send`` function (the gRPC call in the agent, ``serve`` directly in tests), so
``LayoutStore``, ``Iam`` and the registry run unchanged on a node. Watches and leases are not
proxied (nodes poll).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from cloudless.lib.errors import CloudlessError
from cloudless.store.errors import InvalidRequest, OutcomeUnknown, StoreError
from cloudless.store.protocol import Store
from cloudless.store.types import (
    Compare,
    Delete,
    DeleteResult,
    Get,
    GetResult,
    KeyListing,
    KeyValue,
    Lease,
    Listing,
    Op,
    OpResult,
    Put,
    PutResult,
    Target,
    TxnOp,
    TxnResult,
    WatchBatch,
)

LAYOUT_KEY = "/cloudless/objectstore/layout"
NODES_PREFIX = "/cloudless/objectstore-nodes/"
BUCKETS_PREFIX = "/cloudless/s3-buckets/"
READ_PREFIXES = ("/cloudless/objectstore/", NODES_PREFIX, "/cloudless/s3-keys/", BUCKETS_PREFIX)


class ProxyRefused(CloudlessError):
    code = "store_proxy_refused"


def may_read(key: str) -> str | None:
    """None if a node may read ``key`` (or list under it), else why not."""
    if any(key.startswith(p) for p in READ_PREFIXES):
        return None
    return f"{key!r}: nodes may read only {', '.join(READ_PREFIXES)}"


def may_write(node: str, key: str) -> str | None:
    """None if ``node`` may change ``key``, else why not."""
    if key == LAYOUT_KEY or key == NODES_PREFIX + node:
        return None
    if key.startswith(BUCKETS_PREFIX) and len(key) > len(BUCKETS_PREFIX):
        return None
    return f"{key!r}: node {node} may write only {LAYOUT_KEY}, {NODES_PREFIX}{node} and buckets"


# ---- JSON codec ------------------------------------------------------------------------------


def _b(x: bytes) -> str:
    return base64.b64encode(x).decode()


def _unb(x: str) -> bytes:
    return base64.b64decode(x)


def kv_out(kv: KeyValue | None) -> Any:
    if kv is None:
        return None
    return [kv.key, _b(kv.value), kv.create_revision, kv.mod_revision, kv.version, kv.lease]


def kv_in(r: Any) -> KeyValue | None:
    if r is None:
        return None
    return KeyValue(str(r[0]), _unb(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]))


def compare_out(c: Compare) -> Any:
    operand = {"b": _b(c.operand)} if isinstance(c.operand, bytes) else {"i": c.operand}
    return {"key": c.key, "target": c.target.value, "op": c.op.value, **operand}


def compare_in(d: Any) -> Compare:
    operand: int | bytes = _unb(d["b"]) if "b" in d else int(d["i"])
    return Compare(str(d["key"]), Target(d["target"]), Op(d["op"]), operand)


def op_out(op: TxnOp) -> Any:
    if isinstance(op, Put):
        return {"put": op.key, "value": _b(op.value)}
    if isinstance(op, Delete):
        return {"delete": op.key, "prefix": op.prefix}
    return {"get": op.key, "prefix": op.prefix}


def op_in(d: Any) -> TxnOp:
    if "put" in d:
        return Put(str(d["put"]), _unb(d["value"]))
    if "delete" in d:
        return Delete(str(d["delete"]), bool(d["prefix"]))
    return Get(str(d["get"]), bool(d["prefix"]))


def result_out(r: OpResult) -> Any:
    if isinstance(r, PutResult):
        return {"put": kv_out(r.prev_kv)}
    if isinstance(r, DeleteResult):
        return {"deleted": r.deleted}
    return {"kvs": [kv_out(kv) for kv in r.kvs]}


def result_in(d: Any) -> OpResult:
    if "put" in d:
        return PutResult(kv_in(d["put"]))
    if "deleted" in d:
        return DeleteResult(int(d["deleted"]))
    return GetResult(tuple(kv for kv in (kv_in(x) for x in d["kvs"]) if kv is not None))


# ---- coordinator side ------------------------------------------------------------------------


def check(node: str, request: Any) -> None:
    """Raise ``ProxyRefused`` unless ``node`` may run ``request``."""
    op = request.get("op") if isinstance(request, dict) else None
    problems: list[str] = []
    if op in ("get", "list"):
        why = may_read(str(request.get("key", "")))
        problems += [why] if why else []
    elif op == "txn":
        for c in request.get("compares", []):
            why = may_read(str(c.get("key", "")))
            problems += [why] if why else []
        for branch in ("success", "failure"):
            for o in request.get(branch, []):
                if "get" in o:
                    why = may_read(str(o["get"]))
                elif o.get("prefix"):
                    why = f"{o.get('delete')!r}: nodes may not delete by prefix"
                else:
                    why = may_write(node, str(o.get("put", o.get("delete", ""))))
                problems += [why] if why else []
    else:
        problems.append(f"op {op!r}: one of get, list, txn")
    if problems:
        raise ProxyRefused("store proxy: " + "; ".join(problems))


Reveal = Callable[[str, bytes], bytes]  # (key, stored value) -> the value a node reads


def _shown(kv: KeyValue | None, reveal: Reveal | None) -> KeyValue | None:
    if kv is None or reveal is None:
        return kv
    return replace(kv, value=reveal(kv.key, kv.value))


async def serve(store: Store, node: str, request: Any, reveal: Reveal | None = None) -> Any:
    """Run a checked request on ``store``; the JSON answer, every value read passed through
    ``reveal``. A store failure becomes ``{"error": ..., "code": ...}`` (``OutcomeUnknown``
    keeps its code so the node's ``Table.update`` re-reads instead of retrying blindly)."""
    check(node, request)
    try:
        if request["op"] == "get":
            return {"kv": kv_out(_shown(await store.get(str(request["key"])), reveal))}
        if request["op"] == "list":
            listing = await store.list(str(request["key"]))
            kvs = [kv_out(_shown(kv, reveal)) for kv in listing.kvs]
            return {"kvs": kvs, "revision": listing.revision}
        res = await store.txn(
            [compare_in(c) for c in request["compares"]],
            [op_in(o) for o in request["success"]],
            [op_in(o) for o in request["failure"]],
        )
        results = [
            GetResult(tuple(kv for kv in (_shown(x, reveal) for x in r.kvs) if kv is not None))
            if isinstance(r, GetResult)
            else r
            for r in res.results
        ]
        return {
            "succeeded": res.succeeded,
            "revision": res.revision,
            "results": [result_out(r) for r in results],
        }
    except OutcomeUnknown as e:
        return {"error": str(e), "code": "outcome_unknown"}
    except StoreError as e:
        return {"error": str(e), "code": e.code}


# ---- node side -------------------------------------------------------------------------------

Send = Callable[[Any], Awaitable[Any]]


class ProxyStore:
    """A ``Store`` over ``send`` (see the module docstring for what it supports)."""

    def __init__(self, send: Send) -> None:
        self.send = send

    async def _call(self, request: Any) -> Any:
        answer = await self.send(request)
        if "error" in answer:
            if answer.get("code") == "outcome_unknown":
                raise OutcomeUnknown(answer["error"])
            raise StoreError(f"store proxy: {answer['error']}")
        return answer

    async def get(self, key: str) -> KeyValue | None:
        return kv_in((await self._call({"op": "get", "key": key}))["kv"])

    async def list(self, prefix: str, *, revision: int = 0) -> Listing:
        if revision:
            raise InvalidRequest("store proxy: listing at a past revision is not proxied")
        a = await self._call({"op": "list", "key": prefix})
        kvs = tuple(kv for kv in (kv_in(x) for x in a["kvs"]) if kv is not None)
        return Listing(kvs, int(a["revision"]))

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        a = await self._call(
            {
                "op": "txn",
                "compares": [compare_out(c) for c in compares],
                "success": [op_out(o) for o in success],
                "failure": [op_out(o) for o in failure],
            }
        )
        results = tuple(result_in(r) for r in a["results"])
        return TxnResult(bool(a["succeeded"]), int(a["revision"]), results)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        if lease:
            raise InvalidRequest("store proxy: leases are not proxied")
        return (await self.txn((), [Put(key, value)])).revision

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        res = await self.txn((), [Delete(key, prefix)])
        r = res.results[0] if res.results else DeleteResult(0)
        return r.deleted if isinstance(r, DeleteResult) else 0

    async def keys(self, prefix: str, *, limit: int) -> KeyListing:
        listing = await self.list(prefix)
        keys = tuple(kv.key for kv in listing.kvs)
        return KeyListing(keys[:limit], len(keys), listing.revision)

    def watch(
        self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False
    ) -> AsyncGenerator[WatchBatch, None]:
        raise InvalidRequest("store proxy: watches are not proxied; poll instead")

    async def grant_lease(self, ttl: int) -> Lease:
        raise InvalidRequest("store proxy: leases are not proxied")

    async def keepalive(self, lease_id: int) -> int:
        raise InvalidRequest("store proxy: leases are not proxied")

    async def revoke_lease(self, lease_id: int) -> None:
        raise InvalidRequest("store proxy: leases are not proxied")

    async def lease_ttl(self, lease_id: int) -> int:
        raise InvalidRequest("store proxy: leases are not proxied")

    async def compact(self, revision: int) -> None:
        raise InvalidRequest("store proxy: compaction is not proxied")

    async def revision(self) -> int:
        return (await self.list(NODES_PREFIX)).revision

    async def close(self) -> None:
        return None


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def decode(data: bytes) -> Any:
    return json.loads(data)
