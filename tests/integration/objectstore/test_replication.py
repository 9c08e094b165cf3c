"""Three nodes on loopback over mutual TLS, R=3: quorum writes and reads, a node killed in
the middle of a stream of uploads, and no acknowledged object lost or corrupted."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cloudless.objectstore.crdt import Entry
from cloudless.objectstore.metadb import LwwTable
from cloudless.objectstore.records import object_pk
from cloudless.objectstore.rpc import Peer, PeerError, RpcServer
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.testing import TRUST_DOMAIN, LoopbackCluster, running, three_zones
from cloudless.security.identity import SpiffeId


async def body(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 256 << 10):
        yield data[i : i + (256 << 10)]


async def read_all(cluster: LoopbackCluster, node: str, key: str) -> bytes:
    engine = cluster.engine(node)
    obj = await engine.head("b", key)
    assert obj is not None, f"{key} missing when read through {node}"
    return b"".join([p async for p in engine.read(obj, 0, obj.size)])


async def test_every_write_lands_on_a_quorum_and_reads_merge(cluster: LoopbackCluster) -> None:
    e1 = cluster.engine("n1")
    await e1.put("b", "small", body(b"tiny"), content_type="t/x", user_meta={})
    big = os.urandom(1_500_000)  # two blocks
    await e1.put("b", "big", body(big), content_type="t/x", user_meta={})
    # R=3 with 3 nodes: every node holds every partition; a write returns after all answered
    for n in ("n1", "n2", "n3"):
        raw = cluster.nodes[n].local.raw("objects")
        assert raw.get(object_pk("b", "small")) is not None
    assert await read_all(cluster, "n3", "big") == big  # n3 reads what n1 wrote


async def test_killing_a_node_mid_stream_loses_no_acknowledged_object(
    cluster: LoopbackCluster,
) -> None:
    acked: dict[str, str] = {}
    failed: list[str] = []
    killed = asyncio.Event()

    async def writer(w: int) -> None:
        for i in range(10):
            key = f"w{w}/obj{i}"
            data = os.urandom(200 if i % 2 else 1_200_000)
            try:
                await cluster.engine("n1").put("b", key, body(data), content_type="x", user_meta={})
            except S3Error:
                failed.append(key)
                continue
            acked[key] = hashlib.sha256(data).hexdigest()
            if len(acked) == 8 and not killed.is_set():
                killed.set()
                await cluster.kill("n3")  # in the middle: other writers are mid-upload

    async with asyncio.TaskGroup() as tg:
        for w in range(3):
            tg.create_task(writer(w))
    # W=2 of 3: losing one node costs no write
    assert failed == [] and len(acked) == 30
    for reader in ("n1", "n2"):
        for key, digest in acked.items():
            assert hashlib.sha256(await read_all(cluster, reader, key)).hexdigest() == digest

    # A second node down: no quorum, and the store says so instead of acknowledging.
    await cluster.kill("n2")
    with pytest.raises(S3Error) as e:
        await cluster.engine("n1").put("b", "late", body(b"x"), content_type="x", user_meta={})
    assert e.value.code == "ServiceUnavailable" and "n2" in e.value.message


async def test_a_peer_that_is_not_the_node_we_meant_is_refused(cluster: LoopbackCluster) -> None:
    from cloudless.objectstore.rpc import Peer, PeerError
    from cloudless.objectstore.testing import TRUST_DOMAIN
    from cloudless.security.identity import SpiffeId

    n1 = cluster.nodes["n1"]
    # n2's address, but we expect n3's identity: the TLS handshake succeeds (same CA), the
    # SPIFFE ID check does not.
    wrong = Peer(
        "n3",
        f"https://127.0.0.1:{cluster.nodes['n2'].port}",
        n1.client,
        SpiffeId.node("n3", TRUST_DOMAIN),
    )
    with pytest.raises(PeerError, match=r"server is not spiffe://cloudless\.test/node/n3"):
        await wrong.entry("objects", "b/x")
    with pytest.raises(PeerError, match=r"server is not spiffe://cloudless\.test/node/n3"):
        await wrong.merge("objects", [("b/x", 1, Entry(1, "n1", b"v"))])  # the call stream
    assert cluster.nodes["n2"].local.raw("objects").entry("b/x") is None


# ---- the batch call (one call per peer per round) ------------------------------------------


@contextlib.asynccontextmanager
async def serving_n2(
    cluster: LoopbackCluster, readable: bool, allowed: Callable[[SpiffeId], bool] = lambda p: True
) -> AsyncIterator[Peer]:
    """n2's store behind a second RPC server (``readable`` and ``allowed`` as given); a Peer
    to it from n1. Both closed on the way out (the peer's call stream, then the server)."""
    n2 = cluster.nodes["n2"]
    server = RpcServer(n2.local, allowed, readable=lambda partition=None: readable)
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=n2.server_ssl).start()
        peer = Peer(
            "n2",
            f"https://127.0.0.1:{runner.addresses[0][1]}",
            cluster.nodes["n1"].client,
            SpiffeId.node("n2", TRUST_DOMAIN),
        )
        try:
            yield peer
        finally:
            await peer.close()
    finally:
        await runner.cleanup()


async def test_a_listing_asks_peers_for_heads_only(cluster: LoopbackCluster) -> None:
    """Objects up to ``INLINE_MAX`` live in their rows; a listing's ``shallow`` range gets
    those rows from a peer without their bodies, and still lists every size and ETag."""
    e1 = cluster.engine("n1")
    bodies = {f"k{i}": os.urandom(4096 * i) for i in range(1, 5)}  # 4-16 KiB: all inline
    for k, data in bodies.items():
        await e1.put("b", k, body(data), content_type="t/x", user_meta={})
    async with serving_n2(cluster, readable=True) as peer:
        whole = await peer.range("objects", "b/", "b/", 10, True)
        heads = await peer.range("objects", "b/", "b/", 10, True, shallow=True)
    assert [pk for pk, _ in heads] == [pk for pk, _ in whole] == [f"b/{k}" for k in bodies]
    for (pk, w), (_, h) in zip(whole, heads, strict=True):
        data = bodies[pk[2:]]
        assert w.value is not None and w.value.endswith(data)
        assert h.value is not None and len(h.value) < 400, "no body in a listing's row"
        assert (h.timestamp, h.writer) == (w.timestamp, w.writer)
    listing = await cluster.engine("n3").list_keys("b", prefix="", delimiter="", after="", limit=10)
    assert [(k, m.size, m.etag) for k, m in listing.keys] == [
        (k, len(d), hashlib.md5(d).hexdigest()) for k, d in bodies.items()
    ]
    assert await read_all(cluster, "n3", "k4") == bodies["k4"]


async def test_a_batch_is_refused_whole_when_a_block_or_table_is_bad(
    cluster: LoopbackCluster,
) -> None:
    from cloudless.objectstore.blocks import block_hash
    from cloudless.objectstore.crdt import Entry
    from cloudless.objectstore.rpc import BatchRequest, PeerError

    n2 = cluster.nodes["n2"].local
    async with serving_n2(cluster, readable=True) as peer:
        data = os.urandom(5000)
        good = block_hash(data)
        row = ("block_refs", f"{good}/v1", 7, Entry(1, "n1", b"1"))
        cases = [
            # (blocks, rows, why the whole batch is refused)
            ([(good, data[:-1])], [row], "400"),  # the bytes do not hash to the name
            ([(good, data)], [row, ("Bad-Table", "x", 1, Entry(1, "n1", b"1"))], "400"),
        ]
        for blocks, rows, why in cases:
            with pytest.raises(PeerError, match=why):
                await peer.batch(BatchRequest([], rows, blocks))
            assert not n2.blocks.has(good)  # nothing of a refused batch was written
            assert n2.raw("block_refs").entry(f"{good}/v1") is None
        reply = await peer.batch(BatchRequest([("objects", "b/none")], [row], [(good, data)]))
        assert n2.blocks.has(good) and reply.merged == [(None, row[3])] and reply.reads == [None]


async def test_a_catching_up_peer_takes_a_batchs_writes_but_refuses_its_reads(
    cluster: LoopbackCluster,
) -> None:
    from cloudless.objectstore.crdt import Entry
    from cloudless.objectstore.rpc import BatchRequest

    async with serving_n2(cluster, readable=False) as peer:
        row = ("objects", "b/late", 3, Entry(5, "n1", b"v"))
        reply = await peer.batch(BatchRequest([("objects", "b/late")], [row], []))
        assert reply.reads is None and "catching up" in (reply.reads_refused or "")
        assert cluster.nodes["n2"].local.raw("objects").entry("b/late") == row[3]
    # this node catching up: its own copy answers no read; the other two make the quorum
    n1 = cluster.nodes["n1"].cluster
    assert n1 is not None
    n1.serving_reads = False
    cluster.nodes["n2"].local.raw("objects").put("b/k", 3, b"theirs", 10)
    cluster.nodes["n3"].local.raw("objects").put("b/k", 3, b"theirs", 10)
    # newer than theirs: were this copy read, it would win the merge
    cluster.nodes["n1"].local.raw("objects").put("b/k", 3, b"mine, not to be read", 100)
    (got,) = await n1.together([("objects", "b/k", 3)], [], [], 20)
    assert got is not None and got.value == b"theirs"


async def test_a_peer_without_the_batch_call_gets_the_separate_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def older(self: RpcServer, request: web.Request) -> web.Response:
        return web.json_response({"error": "no such call"}, status=404)

    # every node as code before the batch call (which had no call stream either)
    monkeypatch.setattr(RpcServer, "batch", older)
    monkeypatch.setattr(RpcServer, "calls", older)
    async with running(tmp_path, three_zones(), replication=3) as c:
        for size in (4096, 1_500_000):
            data = os.urandom(size)
            await c.engine("n1").put("b", f"k{size}", body(data), content_type="x", user_meta={})
            assert await read_all(c, "n3", f"k{size}") == data


# ---- bad input between peers ---------------------------------------------------------------

RANGE = {"table": "objects", "start": "", "prefix": "", "include": True, "limit": 10}
BAD_CALLS = [
    # (path, body, what the 400 names)
    ("/rpc/merge", {"table": "merkle", "rows": []}, "'merkle' is not replicated"),
    ("/rpc/merge", {"table": "objects", "rows": [["b/k", "x", 1, "n1", None]]}, "ValueError"),
    ("/rpc/merge", {"rows": []}, "KeyError: 'table'"),
    ("/rpc/entry", {"table": "hints", "pk": "x"}, "'hints' is not replicated"),
    ("/rpc/range", {"table": "objects"}, "KeyError: 'start'"),
    ("/rpc/partition", {"table": "block_gc", "partition": 1, "after": "", "limit": 1}, "block_gc"),
    ("/rpc/tree/roots", {"tables": ["merkle"], "partitions": [1]}, "'merkle' is not replicated"),
    ("/rpc/tree/items", {"table": "objects", "partition": "p"}, "invalid literal"),
    ("/rpc/forget", {"table": "objects", "rows": [["b/k"]]}, "ValueError"),
    ("/rpc/entry", b"{not json", "JSONDecodeError"),
    ("/rpc/entry", [["objects", "b/k"]], "AttributeError"),
    ("/rpc/range", {**RANGE, "limit": "ten"}, "invalid literal"),
    ("/rpc/range", {**RANGE, "table": "parts", "shallow": True}, "only objects rows have bodies"),
    ("/rpc/tree/leaves", {"table": "objects", "partition": 1}, "unknown tree call 'leaves'"),
    ("/rpc/tree/rows", {"table": "objects", "partition": 1}, "KeyError: 'pks'"),
]


async def test_a_peers_bad_call_is_refused_naming_the_problem(cluster: LoopbackCluster) -> None:
    """A malformed or out-of-bounds call from an authenticated peer (a node's own tables,
    missing fields, wrong types, no JSON) gets a 400 that says what is wrong, and changes
    nothing: the valid rows before a bad one in the same call are not merged either."""
    n2 = cluster.nodes["n2"].local
    trees = n2.meta.db.execute("SELECT count(*) FROM merkle").fetchone()
    async with serving_n2(cluster, readable=True) as peer:
        for path, sent, names in BAD_CALLS:
            data = sent if isinstance(sent, bytes) else json.dumps(sent).encode()
            async with peer.session.post(peer.url + path, data=data, timeout=peer.timeout) as r:
                assert r.status == 400, (path, sent, r.status)
                assert names in (await r.json())["error"], (path, sent)
        good = ["b/first", 1, 5, "n1", base64.b64encode(b"v").decode()]
        body = {"table": "objects", "rows": [good, ["b/second", "x", 5, "n1", None]]}
        async with peer.session.post(peer.url + "/rpc/merge", json=body) as r:
            assert r.status == 400
        assert n2.raw("objects").entry("b/first") is None  # nothing of the call was merged
        assert n2.meta.db.execute("SELECT count(*) FROM merkle").fetchone() == trees


ACTS = [
    # (path, a well-formed body, what breaks while the node acts on it)
    ("/rpc/merge", {"table": "objects", "rows": [["b/k", 1, 5, "n1", None]]}, "apply_many"),
    ("/rpc/entry", {"table": "objects", "pk": "b/k"}, "entry"),
    ("/rpc/tree/rows", {"table": "objects", "partition": 1, "pks": ["b/k"]}, "rows"),
]


@pytest.mark.parametrize(("path", "body", "breaks"), ACTS)
async def test_a_failure_while_acting_on_a_good_call_is_this_nodes_error(
    cluster: LoopbackCluster,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    body: dict[str, object],
    breaks: str,
) -> None:
    """Only what goes wrong while a call is read is the caller's fault (400): the same kind
    of exception raised after, while the node acts on a well-formed call, is a 500."""
    n2 = cluster.nodes["n2"].local

    def broken(*args: object) -> None:
        raise ValueError("a bug in this node")

    target = n2 if breaks == "apply_many" else LwwTable
    monkeypatch.setattr(target, breaks, broken)
    async with serving_n2(cluster, readable=True) as peer:
        async with peer.session.post(peer.url + path, json=body) as r:
            assert r.status == 500, (path, r.status, await r.text())


# ---- the call stream (merge and small batch calls over one WebSocket per peer) -------------


async def test_small_calls_go_over_the_call_stream(
    cluster: LoopbackCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP closed to merge and batch calls, PUTs of small objects (inline and one
    block) still land on every replica: their calls went over the stream."""

    real_post = Peer._post

    async def post_but_merge_or_batch(self: Peer, path: str, *a: Any, **k: Any) -> Any:
        assert path not in ("/rpc/merge", "/rpc/batch"), f"{path} went over HTTP"
        return await real_post(self, path, *a, **k)

    monkeypatch.setattr(Peer, "_post", post_but_merge_or_batch)
    for name, size in (("inline", 100), ("block", 4096)):
        data = os.urandom(size)
        await cluster.engine("n1").put("b", name, body(data), content_type="x", user_meta={})
        await cluster.engine("n1").put("b", name, body(data), content_type="x", user_meta={})
        await asyncio.sleep(0.1)  # the third replica's calls finish in the background
        for n in ("n1", "n2", "n3"):
            assert cluster.nodes[n].local.raw("objects").entry(object_pk("b", name)) is not None


async def test_a_peer_without_the_stream_is_called_over_http(
    cluster: LoopbackCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that has no call stream (older code: 404 on it) gets its calls over HTTP, and
    the stream is not tried again for ``STREAM_RETRY`` seconds."""
    from cloudless.objectstore import rpc

    async def absent(self: RpcServer, request: web.Request) -> web.Response:
        return web.json_response({"error": "no such call"}, status=404)

    monkeypatch.setattr(RpcServer, "calls", absent)
    async with serving_n2(cluster, readable=True) as peer:
        now = [100.0]
        peer.stream.now = lambda: now[0]
        opened = 0
        real = peer.session.ws_connect

        def counting(*args: object, **kwargs: object) -> object:
            nonlocal opened
            opened += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(peer.session, "ws_connect", counting)
        e = Entry(5, "n1", b"v")
        assert await peer.merge("objects", [("b/a", 1, e)]) == [(None, e)]
        assert await peer.merge("objects", [("b/b", 1, e)]) == [(None, e)]
        assert opened == 1
        now[0] += rpc.STREAM_RETRY + 1
        assert await peer.merge("objects", [("b/c", 1, e)]) == [(None, e)]
        assert opened == 2


async def test_a_call_the_stream_loses_is_made_again_over_http(
    cluster: LoopbackCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream breaks after the peer took a call but before it answered: the call is
    made again over HTTP (merge and batch are idempotent) and answers as it would have."""

    async def applied_then_lost(self: RpcServer, ws: web.WebSocketResponse, frame: bytes) -> None:
        self._merge(frame[5:])
        await ws.close()

    monkeypatch.setattr(RpcServer, "_stream_call", applied_then_lost)
    async with serving_n2(cluster, readable=True) as peer:
        e = Entry(5, "n1", b"v")
        assert await peer.merge("objects", [("b/a", 1, e)]) == [(e, e)]  # applied twice
        assert cluster.nodes["n2"].local.raw("objects").entry("b/a") == e


STREAM_REFUSALS = [
    # (frame after the call id, the PeerError's words)
    (bytes([1]) + b"{not json", "merge answered 400: bad merge call: JSONDecodeError"),
    (bytes([1]) + b'{"table": "merkle", "rows": []}', "'merkle' is not replicated"),
    (bytes([2]) + b"\x00\x00", "batch answered 400: bad batch"),
    (bytes([9]) + b"{}", "9 answered 400: bad call stream frame: no call 9"),
]


@pytest.mark.parametrize(("frame", "words"), STREAM_REFUSALS)
async def test_a_bad_call_on_the_stream_is_refused_naming_the_problem(
    cluster: LoopbackCluster, frame: bytes, words: str
) -> None:
    from cloudless.objectstore import rpc

    async with serving_n2(cluster, readable=True) as peer:
        with pytest.raises(rpc.PeerError, match=re.escape(words)):
            await peer.stream.call(frame[0], frame[1:])
        # the stream is still there for the next call
        e = Entry(5, "n1", b"v")
        assert await peer.merge("objects", [("b/a", 1, e)]) == [(None, e)]


async def test_a_failure_while_acting_on_a_streamed_call_is_a_500(
    cluster: LoopbackCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise ValueError("a bug in this node")

    monkeypatch.setattr(cluster.nodes["n2"].local, "apply_many", broken)
    async with serving_n2(cluster, readable=True) as peer:
        with pytest.raises(PeerError, match="merge answered 500: internal error"):
            await peer.merge("objects", [("b/a", 1, Entry(5, "n1", b"v"))])


async def test_a_peer_no_longer_allowed_loses_its_stream(cluster: LoopbackCluster) -> None:
    """The stream's peer is checked before each call, not only when it opened: once n1 is
    no longer a storage peer of n2, its next call is refused (over the stream, then HTTP)."""
    allowed = [True]
    n2 = cluster.nodes["n2"]
    async with serving_n2(cluster, readable=True, allowed=lambda p: allowed[0]) as peer:
        e = Entry(5, "n1", b"v")
        assert await peer.merge("objects", [("b/a", 1, e)]) == [(None, e)]
        allowed[0] = False
        with pytest.raises(PeerError, match="answered 403"):
            await peer.merge("objects", [("b/b", 1, e)])
        assert n2.local.raw("objects").entry("b/b") is None


async def test_calls_a_cancelled_write_leaves_running_are_kept_and_their_errors_read(
    cluster: LoopbackCluster,
) -> None:
    """A write whose caller is cancelled (its upload cut off) while a peer's call hangs (a
    frozen node): the call goes on in the background, tracked like the calls an early
    return leaves, and its failure is read (no 'exception was never retrieved')."""
    c = cluster.nodes["n1"].cluster
    assert c is not None
    hang = asyncio.Event()
    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: unretrieved.append(ctx))

    async def local() -> str:
        return "ok"

    async def remote(peer: Peer) -> str:
        await hang.wait()
        raise PeerError(f"peer {peer.name}: timed out")

    write = asyncio.ensure_future(
        c.each(("n1", "n2", "n3"), local, remote, enough=lambda acked: len(acked) >= 2)
    )
    await asyncio.sleep(0.05)
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    assert len(c._background) == 2  # the two peers' calls, still running
    hang.set()
    await asyncio.sleep(0.05)
    assert not c._background
    gc.collect()
    await asyncio.sleep(0)
    assert unretrieved == []
    loop.set_exception_handler(None)


async def test_a_stream_its_peer_stopped_opening_is_dropped_quietly(
    cluster: LoopbackCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The peer's wait for a stream to open is bounded (``STREAM_OPEN``): a node slow to
    answer (frozen, loaded) finds the connection closed when it answers. That is no error
    of this node's; the peer's calls went over HTTP meanwhile."""
    real = web.WebSocketResponse.prepare

    async def peer_gone(self: web.WebSocketResponse, request: web.BaseRequest) -> Any:
        assert request.transport is not None
        request.transport.close()  # as the peer's timeout does
        return await real(self, request)

    monkeypatch.setattr(web.WebSocketResponse, "prepare", peer_gone)
    caplog.set_level(logging.WARNING)
    data = os.urandom(4096)
    await cluster.engine("n1").put("b", "gone", body(data), content_type="x", user_meta={})
    await asyncio.sleep(0.1)
    assert await read_all(cluster, "n2", "gone") == data
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_peer_gone_mid_call_is_no_error_here(
    cluster: LoopbackCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A call whose peer went away while its body was read (killed, or it gave up): the
    connection is closed; nothing is logged as this node's error."""
    real_read = web.BaseRequest.read
    lost: list[str] = []

    async def read_once_lost(self: web.BaseRequest) -> bytes:
        if self.path == "/rpc/batch" and not lost:
            lost.append(self.path)
            raise ConnectionResetError("Connection lost")
        return await real_read(self)

    monkeypatch.setattr(web.BaseRequest, "read", read_once_lost)
    caplog.set_level(logging.WARNING)
    data = os.urandom(200_000)  # a batch over the stream's limit: over HTTP
    await cluster.engine("n1").put("b", "lost", body(data), content_type="x", user_meta={})
    assert lost == ["/rpc/batch"]
    assert await read_all(cluster, "n1", "lost") == data
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
