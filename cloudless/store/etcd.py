"""``EtcdStore``: the ``Store`` protocol over etcd v3 (gRPC, mutual TLS, several endpoints).

Uses etcd3aio's service stubs with a single attempt per call; *this* module owns retries:

* reads, lease calls and status are retried on transient errors until ``retry_for`` runs out
  (then ``Unavailable``);
* writes (put, delete, txn) are retried only when the request provably never reached a
  server (no connection); any other lost answer is ``OutcomeUnknown``;
* watches resume after reconnects from the revision after the last delivered event (etcd3aio's
  own watch resumes from the response header's revision, which can skip events), and ask for
  a member with a leader (``hasleader``) so a partitioned member cannot stall a watch;
* ``reload_tls`` closes the channels it replaces (requests get a short grace, watch streams
  none), and gRPC cancels the calls still open on a closed channel: the awaiting task then
  gets a ``CancelledError`` that nobody asked for. Such a call counts as a lost connection (a
  watch resumes on the current channel, a read is retried, a write is ``OutcomeUnknown``);
  only a cancellation of the caller's own task, or ``close()``, propagates. Let through, it
  silently ended every task that held a watch across a reload (the coordinator's election
  among them: a ``TaskGroup`` ignores a child that ends cancelled).
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from etcd3aio import EtcdError
from etcd3aio import _protobuf as _pb
from etcd3aio.connections import ConnectionManager
from etcd3aio.kv import KVService
from etcd3aio.lease import LeaseService

from cloudless.lib.backoff import Backoff
from cloudless.lib.waits import within
from cloudless.store.errors import (
    Compacted,
    InvalidRequest,
    LeaseNotFound,
    OutcomeUnknown,
    StoreError,
    Unavailable,
)
from cloudless.store.lease_keeper import LeaseKeeper
from cloudless.store.tls import ClientTls
from cloudless.store.types import (
    Compare,
    Delete,
    DeleteResult,
    Event,
    EventType,
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
    check_ops,
    prefix_end,
)

R = TypeVar("R")
rpc_pb2: Any = _pb.rpc_pb2  # type: ignore[attr-defined]
_rpc_grpc: Any = _pb.rpc_pb2_grpc  # type: ignore[attr-defined]
_DEFAULT_BACKOFF = Backoff(base=0.05, cap=1.0)
_MAX_RECEIVE = 256 * 1024 * 1024
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# A request that failed with one of these never left the client: safe to resend a write.
_NOT_SENT = ("failed to connect", "connection refused", "connections to all backends failing")
_HASLEADER = (("hasleader", "true"),)
# Every connection to a member is pinged every KEEPALIVE_TIME_MS while a call or a watch is
# open on it, and closed when a ping goes unanswered for KEEPALIVE_TIMEOUT_MS (gRPC also
# sets TCP_USER_TIMEOUT from it); its calls and watches then fail over to another member.
# Members must accept pings that often (``etcd_process.GRPC_KEEPALIVE_MIN_TIME_MS``).
KEEPALIVE_TIME_MS = 2_000
KEEPALIVE_TIMEOUT_MS = 2_000
# How long requests in flight on the channel a TLS reload replaces may take to finish.
RELOAD_GRACE_S = 0.5


def channel_options(base: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """etcd3aio's channel options with our keepalive. gRPC's default lets a client send at
    most 2 pings while it sends no data, and a watch sends nothing after its create request:
    a watch on a member behind a dropped link (a partition) then waited in silence, not
    failing over, for as long as the partition lasted (chaos: 38 s, the whole cut). With no
    such limit the watch fails within KEEPALIVE_TIME_MS + KEEPALIVE_TIMEOUT_MS and resumes
    on a member that has the quorum. Pings only while calls are open: etcd refuses pings on
    an idle connection (``too_many_pings``)."""
    ours = {
        "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
        "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
        "grpc.keepalive_permit_without_calls": 0,
        "grpc.http2.max_pings_without_data": 0,
    }
    return [(k, v) for k, v in base if k not in ours] + list(ours.items())


_TARGET = {
    Target.VALUE: rpc_pb2.Compare.VALUE,
    Target.VERSION: rpc_pb2.Compare.VERSION,
    Target.CREATE: rpc_pb2.Compare.CREATE,
    Target.MOD: rpc_pb2.Compare.MOD,
    Target.LEASE: rpc_pb2.Compare.LEASE,
}
_FIELD = {
    Target.VALUE: "value",
    Target.VERSION: "version",
    Target.CREATE: "create_revision",
    Target.MOD: "mod_revision",
    Target.LEASE: "lease",
}
_RESULT = {
    Op.EQ: rpc_pb2.Compare.EQUAL,
    Op.NE: rpc_pb2.Compare.NOT_EQUAL,
    Op.LT: rpc_pb2.Compare.LESS,
    Op.GT: rpc_pb2.Compare.GREATER,
}


def _rpc_error(exc: BaseException) -> grpc.aio.AioRpcError | None:
    """etcd3aio wraps transient gRPC errors; find the original."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, grpc.aio.AioRpcError):
            return seen
        seen = seen.__cause__
    return None


def _stream_reset(exc: grpc.aio.AioRpcError) -> bool:
    """The member serving a stream went away mid-stream (stopped or restarted: gRPC reports
    the reset as INTERNAL "Stream removed"); a watch resumes from its next revision."""
    return exc.code() is grpc.StatusCode.INTERNAL and "Stream removed" in (exc.details() or "")


def _answer_lost(exc: grpc.aio.AioRpcError) -> bool:
    """The member went away with the call open (stopped or restarted): gRPC reports UNKNOWN
    "No status received" or a stream reset. Like a lost connection: a read is retried, a
    write's outcome is unknown."""
    lost = exc.code() is grpc.StatusCode.UNKNOWN and "No status received" in (exc.details() or "")
    return lost or _stream_reset(exc)


def _cancel_requested() -> bool:
    """Whether our own task was asked to stop (as opposed to a gRPC call cancelled under it
    because its channel was closed)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _kv(pb: Any) -> KeyValue:
    return KeyValue(
        pb.key.decode(), pb.value, pb.create_revision, pb.mod_revision, pb.version, pb.lease
    )


class EtcdStore:
    """See module docstring. Create with ``EtcdStore(endpoints, tls)``; ``close()`` when done."""

    def __init__(
        self,
        endpoints: Sequence[str],
        tls: ClientTls,
        *,
        request_timeout: float = 2.0,
        retry_for: float = 15.0,
        backoff: Backoff = _DEFAULT_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint (host:port)")
        self.endpoints = tuple(endpoints)
        self._tls = tls
        self._closed = False
        self._keepers: weakref.WeakSet[LeaseKeeper] = weakref.WeakSet()
        self._open_channels()
        self._timeout = request_timeout
        self.page_size = 500
        self._retry_for = retry_for
        self._backoff = backoff
        self._rng = rng or random.Random()

    def _open_channels(self) -> None:
        tls = self._tls

        def channel(*extra: tuple[str, Any]) -> grpc.aio.Channel:
            manager = ConnectionManager(list(self.endpoints))
            manager.grpc_options = channel_options(manager.grpc_options)
            # Big watch batches and list pages must not trip gRPC's 4 MiB receive default.
            manager.grpc_options.append(("grpc.max_receive_message_length", _MAX_RECEIVE))
            manager.grpc_options.extend(extra)
            return manager.get_channel(
                ca_cert=tls.ca_pem,
                cert_key=tls.key_pem,
                cert_chain=tls.cert_pem,
                tls_server_name=tls.server_name,
            )

        self.channel = channel()
        # Watches get a connection of their own. On a shared one, watch events that a busy
        # event loop reads late fill HTTP/2's connection-level flow-control window, and then
        # etcd cannot send the answer to any request: reads, writes and lease grants time
        # out while etcd sits idle (seen at ~3,500 nodes: the leader lost its lease that way).
        self._watch_channel = channel(("grpc.use_local_subchannel_pool", 1))
        self._kv = KVService(self.channel, max_attempts=1)
        self._lease = LeaseService(self.channel, max_attempts=1)
        self._watch = _rpc_grpc.WatchStub(self._watch_channel)

    async def reload_tls(self, tls: ClientTls, endpoints: Sequence[str] = ()) -> None:
        """Use ``tls`` (and ``endpoints``, if given) for every call from now on: new channels
        (lease keepers reconnect after their renewal under way). The previous watch channel
        is closed at once (its streams never end by themselves: they resume on the new one,
        see the module doc); the previous request channel once its calls in flight end, or
        after ``RELOAD_GRACE_S`` (gRPC then cancels them: reads are retried, writes
        ``OutcomeUnknown``).

        Closed, not kept: a channel left open keeps its credentials, and gRPC's round-robin
        policy reconnects it to every member, with growing back-off, whenever a member
        restarts; members that no longer trust its certificate (or serve one it does not
        trust) log each attempt as a rejected connection."""
        old, old_watches = self.channel, self._watch_channel
        self._tls = tls
        if endpoints:
            self.endpoints = tuple(endpoints)
        self._open_channels()
        for keeper in list(self._keepers):
            keeper.reconnect()
        await asyncio.gather(old_watches.close(), old.close(grace=RELOAD_GRACE_S))

    async def set_endpoints(self, endpoints: Sequence[str]) -> bool:
        """Use ``endpoints`` from now on if they are not the ones in use (compared as a set:
        the order a TLS reload chose stays). Returns whether anything changed."""
        if not endpoints or set(endpoints) == set(self.endpoints):
            return False
        await self.reload_tls(self._tls, endpoints)
        return True

    # ---- retry policy ----------------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[[], Awaitable[R]], *, idempotent: bool) -> R:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_for
        attempt = 0
        while True:
            try:
                return await fn()
            except asyncio.CancelledError:
                if _cancel_requested() or self._closed:
                    raise
                # our channel was closed under the call by a TLS reload
                if not idempotent:
                    raise OutcomeUnknown(
                        f"etcd {what}: its connection was replaced mid-call; the write may or "
                        "may not have been applied: re-read before retrying"
                    ) from None
                if loop.time() >= deadline:
                    raise Unavailable(
                        f"etcd {what}: cancelled for {self._retry_for:.0f}s"
                    ) from None
            except (EtcdError, grpc.aio.AioRpcError) as exc:
                err = _rpc_error(exc)
                if err is None or (err.code() not in _TRANSIENT and not _answer_lost(err)):
                    raise self._map(what, exc, err) from None
                details = (err.details() or "").lower()
                not_sent = any(m in details for m in _NOT_SENT)
                if not (idempotent or not_sent):
                    raise OutcomeUnknown(
                        f"etcd {what}: no answer ({err.code().name}: {err.details()}); the "
                        "write may or may not have been applied: re-read before retrying"
                    ) from None
                if loop.time() >= deadline:
                    raise Unavailable(
                        f"etcd {what}: unavailable for {self._retry_for:.0f}s at "
                        f"{', '.join(self.endpoints)} ({err.details()}); check the "
                        "coordinators' etcd members (quorum needs a majority)"
                    ) from None
            except TimeoutError:
                if not idempotent:
                    raise OutcomeUnknown(
                        f"etcd {what}: timed out after {self._timeout}s; the write may or "
                        "may not have been applied: re-read before retrying"
                    ) from None
                if loop.time() >= deadline:
                    raise Unavailable(
                        f"etcd {what}: timed out for {self._retry_for:.0f}s"
                    ) from None
            await asyncio.sleep(self._backoff.delay(attempt, self._rng))
            attempt += 1

    @staticmethod
    def _map(what: str, exc: BaseException, err: grpc.aio.AioRpcError | None) -> StoreError:
        details = (err.details() if err else None) or str(exc)
        code = err.code() if err else None
        if "compacted" in details:
            return Compacted(0)
        if "requested lease not found" in details:
            return LeaseNotFound(0)
        if "duplicate key" in details:
            return InvalidRequest(f"etcd {what}: {details}")
        if "database space exceeded" in details:
            return StoreError(
                f"etcd {what}: backend quota exceeded; compact and defragment the store "
                "(docs/store.md, 'Maintenance')"
            )
        name = code.name if code else type(exc).__name__
        return StoreError(f"etcd {what}: {name}: {details}")

    # ---- reads -----------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        resp = await self._call(
            "get", lambda: self._kv.get(key, timeout=self._timeout), idempotent=True
        )
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def list(self, prefix: str, *, revision: int = 0) -> Listing:
        """Pages of ``page_size`` keys, all read at the first page's revision (one snapshot),
        so large tables stay under gRPC's message size limit."""
        kvs: list[KeyValue] = []
        start: bytes = prefix.encode()
        end = prefix_end(prefix)
        at = revision
        while True:
            try:
                resp = await self._call(
                    "list",
                    lambda k=start, r=at: self._kv.get(  # type: ignore[misc]
                        k, end, revision=r, limit=self.page_size, timeout=self._timeout
                    ),
                    idempotent=True,
                )
            except Compacted:
                raise Compacted(at) from None
            kvs.extend(_kv(kv) for kv in resp.kvs)
            if at == 0:
                at = int(resp.header.revision)
            if not resp.more or not resp.kvs:
                return Listing(tuple(kvs), at)
            start = resp.kvs[-1].key + b"\x00"

    async def keys(self, prefix: str, *, limit: int) -> KeyListing:
        if limit < 1:
            raise StoreError(f"keys: limit must be at least 1, got {limit}")
        resp = await self._call(
            "keys",
            lambda: self._kv.get(
                prefix.encode(),
                prefix_end(prefix),
                limit=limit,
                keys_only=True,
                timeout=self._timeout,
            ),
            idempotent=True,
        )
        found = tuple(kv.key.decode() for kv in resp.kvs)
        return KeyListing(found, int(resp.count), int(resp.header.revision))

    async def revision(self) -> int:
        resp = await self._call(
            "revision",
            lambda: self._kv.get(b"\x00", count_only=True, timeout=self._timeout),
            idempotent=True,
        )
        return int(resp.header.revision)

    # ---- writes ----------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        try:
            resp = await self._call(
                "put",
                lambda: self._kv.put(key, value, lease, timeout=self._timeout),
                idempotent=False,
            )
        except LeaseNotFound:
            raise LeaseNotFound(lease) from None
        return int(resp.header.revision)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        end = prefix_end(key) if prefix else None
        resp = await self._call(
            "delete", lambda: self._kv.delete(key, end, timeout=self._timeout), idempotent=False
        )
        return int(resp.deleted)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        check_ops(success)
        check_ops(failure)
        cmp = [self._compare(c) for c in compares]
        ok_ops = [self._op(o) for o in success]
        fail_ops = [self._op(o) for o in failure]
        try:
            resp = await self._call(
                "txn",
                lambda: self._kv.txn(cmp, ok_ops, fail_ops, timeout=self._timeout),
                idempotent=False,
            )
        except LeaseNotFound:
            leases = [o.lease for o in (*success, *failure) if isinstance(o, Put) and o.lease]
            raise LeaseNotFound(leases[0] if leases else 0) from None
        results: list[OpResult] = []
        for r in resp.responses:
            which = r.WhichOneof("response")
            if which == "response_range":
                results.append(GetResult(tuple(_kv(kv) for kv in r.response_range.kvs)))
            elif which == "response_put":
                prev = r.response_put.prev_kv
                results.append(PutResult(_kv(prev) if r.response_put.HasField("prev_kv") else None))
            elif which == "response_delete_range":
                results.append(DeleteResult(int(r.response_delete_range.deleted)))
        return TxnResult(bool(resp.succeeded), int(resp.header.revision), tuple(results))

    @staticmethod
    def _compare(c: Compare) -> Any:
        pb = rpc_pb2.Compare(key=c.key.encode(), target=_TARGET[c.target], result=_RESULT[c.op])
        setattr(pb, _FIELD[c.target], c.operand)
        return pb

    @staticmethod
    def _op(op: TxnOp) -> Any:
        if isinstance(op, Put):
            return KVService.txn_op_put(op.key, op.value, lease=op.lease, prev_kv=True)
        end = prefix_end(op.key) if op.prefix else None
        if isinstance(op, Delete):
            return KVService.txn_op_delete(op.key, range_end=end)
        assert isinstance(op, Get)
        return KVService.txn_op_get(op.key, range_end=end)

    async def compact(self, revision: int) -> None:
        try:
            await self._call(
                "compact",
                lambda: self._kv.compact(revision, timeout=self._timeout),
                idempotent=True,
            )
        except Compacted:
            raise Compacted(revision) from None

    # ---- leases ----------------------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> Lease:
        if ttl <= 0:
            raise StoreError(f"lease ttl must be positive, got {ttl}")
        resp = await self._call(
            "lease grant", lambda: self._lease.grant(ttl, timeout=self._timeout), idempotent=True
        )
        return Lease(int(resp.ID), int(resp.TTL))

    def lease_keeper(self, lease_id: int, interval: float) -> LeaseKeeper:
        """Renew ``lease_id`` every ``interval`` from a thread of its own (``LeaseKeeper``),
        independent of this event loop; ``stop()`` it when the lease is no longer wanted."""
        keeper = LeaseKeeper(
            lambda: self.endpoints, lambda: self._tls, lease_id, interval, self._timeout
        )
        self._keepers.add(keeper)
        return keeper

    async def keepalive(self, lease_id: int) -> int:
        async def once() -> int:
            call = self._lease.keep_alive(lease_id)
            try:
                resp = await within(self._timeout, call.read())
            finally:
                call.cancel()
            if resp is grpc.aio.EOF:
                raise StoreError("etcd lease keepalive: stream closed without an answer")
            return int(resp.TTL)

        ttl = await self._call("lease keepalive", once, idempotent=True)
        if ttl <= 0:
            raise LeaseNotFound(lease_id)
        return ttl

    async def revoke_lease(self, lease_id: int) -> None:
        try:
            await self._call(
                "lease revoke",
                lambda: self._lease.revoke(lease_id, timeout=self._timeout),
                idempotent=True,
            )
        except LeaseNotFound:
            return

    async def lease_ttl(self, lease_id: int) -> int:
        resp = await self._call(
            "lease ttl",
            lambda: self._lease.time_to_live(lease_id, timeout=self._timeout),
            idempotent=True,
        )
        return int(resp.TTL) if resp.TTL > 0 or resp.grantedTTL > 0 else -1

    # ---- watches ---------------------------------------------------------------------------

    async def watch(
        self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False
    ) -> AsyncGenerator[WatchBatch, None]:
        next_rev = start_revision
        attempt = 0
        while True:
            create = rpc_pb2.WatchCreateRequest(
                key=prefix.encode(),
                range_end=prefix_end(prefix),
                start_revision=next_rev,
                prev_kv=prev_kv,
            )

            # The request side stays open until this stream ends (``finally``), so gRPC's task
            # that feeds it ends then too, instead of waiting on a future nothing refers to
            # (asyncio destroyed those tasks with "Task was destroyed but it is pending").
            done = asyncio.Event()

            async def requests(req: Any = create, done: asyncio.Event = done) -> AsyncIterator[Any]:
                yield rpc_pb2.WatchRequest(create_request=req)
                await done.wait()

            call = self._watch.Watch(requests(), metadata=_HASLEADER)
            try:
                async for resp in call:
                    if resp.compact_revision:
                        raise Compacted(next_rev, int(resp.compact_revision))
                    if resp.canceled:
                        break  # e.g. the member lost its leader: reconnect elsewhere
                    if resp.created and next_rev == 0:
                        next_rev = int(resp.header.revision) + 1
                    if not resp.events:
                        continue
                    events = tuple(self._event(e) for e in resp.events)
                    next_rev = events[-1].revision + 1
                    attempt = 0
                    yield WatchBatch(events, int(resp.header.revision))
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (*_TRANSIENT, grpc.StatusCode.CANCELLED) and not (
                    _stream_reset(exc)
                ):
                    raise self._map("watch", exc, exc) from None
            except asyncio.CancelledError:
                if _cancel_requested() or self._closed:
                    raise
                # the channel under the stream was closed by reload_tls: resume on the new one
            finally:
                done.set()
                call.cancel()
            await asyncio.sleep(self._backoff.delay(attempt, self._rng))
            attempt += 1

    @staticmethod
    def _event(e: Any) -> Event:
        kind = EventType.DELETE if e.type == 1 else EventType.PUT
        prev = _kv(e.prev_kv) if e.HasField("prev_kv") else None
        return Event(kind, _kv(e.kv), prev)

    async def close(self) -> None:
        self._closed = True
        await self._watch_channel.close()
        await self.channel.close()
