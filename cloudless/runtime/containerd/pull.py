"""Pulling an image into containerd ourselves: registry -> Content -> Snapshots, by the book.

The steps mirror containerd's own client (``pull.go`` + ``unpacker.go``):

1. Take a lease (``containerd.io/gc.expire`` in an hour) so nothing we write is collected
   before the image record references it.
2. Resolve the manifest (choosing this node's platform from an index) and stream config and
   layer blobs into ``Content.Write`` with the expected digest (containerd re-checks it on
   commit; we check it too, to name the culprit). Blobs already present are skipped.
   Labels: index -> ``containerd.io/gc.ref.content.m.<i>``, manifest ->
   ``…content.config`` and ``…content.l.<i>``.
3. Unpack layer by layer as soon as each is fetched: ``Snapshots.Prepare`` (parent = previous
   chain ID, key ``extract-<unique> <chainID>``), ``Diff.Apply``, check the applied digest is the
   config's diff ID, ``Snapshots.Commit`` as the chain ID. Existing chain IDs are skipped. Then
   label the layer ``containerd.io/uncompressed`` and the config
   ``containerd.io/gc.ref.snapshot.<snapshotter>`` = top chain ID.
4. ``Images.Create`` (or ``Update`` of the target), then drop the lease.

Concurrent pulls of one reference share one pull.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc.aio
from google.protobuf import field_mask_pb2  # type: ignore[import-untyped]

from cloudless.api.gen.containerd.services.content.v1 import content_pb2 as cpb
from cloudless.api.gen.containerd.services.diff.v1 import diff_pb2
from cloudless.api.gen.containerd.services.images.v1 import images_pb2
from cloudless.api.gen.containerd.services.leases.v1 import leases_pb2
from cloudless.api.gen.containerd.services.snapshots.v1 import snapshots_pb2
from cloudless.api.gen.containerd.types import descriptor_pb2
from cloudless.lib.errors import NotFound
from cloudless.runtime.containerd.client import AlreadyExists, ContainerdClient, map_error
from cloudless.runtime.errors import DigestMismatch, RegistryUnavailable, RuntimeFailure
from cloudless.runtime.oci.distribution import DistributionClient
from cloudless.runtime.oci.image import (
    INDEX_TYPES,
    Descriptor,
    ImageConfig,
    chain_ids,
    media_type_of,
    parse_json,
    parse_manifest,
    pick_platform,
)
from cloudless.runtime.oci.reference import Reference, parse_reference
from cloudless.runtime.types import ImageInfo, ProgressCallback, PullProgress, RegistryAuth

_CHUNK = 1 << 20
_PARALLEL_LAYERS = 3
_SLOW = 600.0  # seconds allowed for one blob write or one layer apply


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ResolvedImage:
    """What a pull resolved: the image record's target and the chosen platform's parts."""

    name: str
    target: Descriptor
    config: ImageConfig
    chain_id: str
    size: int


class Puller:
    def __init__(
        self,
        client: ContainerdClient,
        registry: DistributionClient,
        *,
        snapshotter: str = "overlayfs",
        arch: str = "amd64",
        now: Callable[[], float],
    ) -> None:
        self.c = client
        self.registry = registry
        self.snapshotter = snapshotter
        self.arch = arch
        self.now = now
        self._inflight: dict[tuple[str, str], asyncio.Future[ImageInfo]] = {}
        self._blobs: dict[str, asyncio.Future[None]] = {}  # digest -> write in progress

    async def pull(
        self,
        ref_str: str,
        progress: ProgressCallback | None = None,
        auth: RegistryAuth | None = None,
    ) -> ImageInfo:
        """Pull ``ref_str``; ``auth``: credentials for its registry, for this pull only.
        Concurrent pulls of one image with the same credentials share the work."""
        ref = parse_reference(ref_str)
        name = str(ref)
        dist = self.registry.with_auth(ref.host, auth) if auth else self.registry
        key = (name, auth.fingerprint() if auth else "")
        shared = self._inflight.get(key)
        if shared is not None:
            info = await asyncio.shield(shared)
            if progress:
                progress(PullProgress(ref_str, info.size_bytes, info.size_bytes))
            return info
        fut: asyncio.Future[ImageInfo] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            info = await self._pull(dist, ref, name, ref_str, progress)
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(e)
                fut.exception()
            raise
        else:
            fut.set_result(info)
            return info
        finally:
            del self._inflight[key]

    async def _pull(
        self,
        dist: DistributionClient,
        ref: Reference,
        name: str,
        ref_str: str,
        progress: ProgressCallback | None,
    ) -> ImageInfo:
        try:
            top_bytes, ctype, top_digest = await dist.get_manifest(ref, ref.object)
        except RegistryUnavailable:
            local = await self._local(name)
            if local is None:
                raise
            return local  # offline, but we have it
        lease = f"cloudless-pull-{secrets.token_hex(6)}"
        await self.c.call(
            self.c.leases.Create,
            leases_pb2.CreateRequest(
                id=lease, labels={"containerd.io/gc.expire": rfc3339(self.now() + 3600)}
            ),
            "create lease",
        )
        try:
            return await self._pull_leased(
                dist, ref, name, ref_str, top_bytes, ctype, top_digest, lease, progress
            )
        finally:
            try:
                await self.c.call(
                    self.c.leases.Delete, leases_pb2.DeleteRequest(id=lease), "delete lease"
                )
            except Exception:
                pass

    async def _pull_leased(
        self,
        dist: DistributionClient,
        ref: Reference,
        name: str,
        ref_str: str,
        top_bytes: bytes,
        ctype: str,
        top_digest: str,
        lease: str,
        progress: ProgressCallback | None,
    ) -> ImageInfo:
        doc = parse_json(top_bytes, f"manifest of {name}")
        top_type = media_type_of(doc, ctype)
        top = Descriptor(top_type, top_digest, len(top_bytes))
        index_write: tuple[bytes, dict[str, str]] | None = None
        if top_type in INDEX_TYPES:
            chosen = pick_platform(doc, self.arch, ref=name)
            m_bytes, m_ctype, m_digest = await dist.get_manifest(ref, chosen.digest)
            if m_digest != chosen.digest:
                raise DigestMismatch(
                    f"manifest of {name}: got {m_digest}, index says {chosen.digest}"
                )
            mdoc = parse_json(m_bytes, f"manifest {chosen.digest}")
            mdesc = Descriptor(media_type_of(mdoc, m_ctype), m_digest, len(m_bytes))
            index_write = (top_bytes, {"containerd.io/gc.ref.content.m.0": m_digest})
        else:
            m_bytes, mdoc, mdesc = top_bytes, doc, top
        manifest = parse_manifest(mdoc)
        config_bytes = await dist.get_blob(ref, manifest.config.digest)
        config = ImageConfig.from_json(parse_json(config_bytes, f"config of {name}"))
        config.check_platform(self.arch, name)
        if len(config.diff_ids) != len(manifest.layers):
            raise RuntimeFailure(
                f"image {name}: config lists {len(config.diff_ids)} layers, manifest "
                f"{len(manifest.layers)}; the image is malformed"
            )
        chains = chain_ids(list(config.diff_ids))
        total = manifest.config.size + sum(layer.size for layer in manifest.layers)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(PullProgress(ref_str, done, total))

        advance(0)
        await self._put_small(manifest.config, config_bytes, lease, {})
        advance(manifest.config.size)

        # Layers: fetch in parallel (bounded), unpack in order as each arrives.
        sem = asyncio.Semaphore(_PARALLEL_LAYERS)
        fetched = [asyncio.Event() for _ in manifest.layers]

        async def fetch(i: int, layer: Descriptor) -> None:
            if await self._snapshot_exists(chains[i]) or await self._content_exists(layer.digest):
                advance(layer.size)
            else:
                async with sem:
                    await self._shared_fetch(dist, ref, layer, lease, advance)
            fetched[i].set()

        async def unpack() -> None:
            for i, layer in enumerate(manifest.layers):
                await fetched[i].wait()
                await self._unpack_layer(
                    layer, chains[i], chains[i - 1] if i else "", config.diff_ids[i], lease
                )

        try:
            async with asyncio.TaskGroup() as tg:
                for i, layer in enumerate(manifest.layers):
                    tg.create_task(fetch(i, layer))
                tg.create_task(unpack())
        except BaseExceptionGroup as eg:
            raise first_error(eg) from None

        if chains:
            await self._set_labels(
                manifest.config.digest,
                {f"containerd.io/gc.ref.snapshot.{self.snapshotter}": chains[-1]},
            )
        m_labels = {"containerd.io/gc.ref.content.config": manifest.config.digest}
        for i, layer in enumerate(manifest.layers):
            m_labels[f"containerd.io/gc.ref.content.l.{i}"] = layer.digest
        await self._put_small(mdesc, m_bytes, lease, m_labels)
        if index_write is not None:
            await self._put_small(top, index_write[0], lease, index_write[1])
        await self._register(name, top, lease)
        return ImageInfo(name, top.digest, total)

    # -- images --------------------------------------------------------------------------

    async def _register(self, name: str, target: Descriptor, lease: str) -> None:
        img = images_pb2.Image(
            name=name,
            target=descriptor_pb2.Descriptor(
                media_type=target.media_type, digest=target.digest, size=target.size
            ),
        )
        try:
            await self.c.call(
                self.c.images.Create,
                images_pb2.CreateImageRequest(image=img),
                f"register {name}",
                lease=lease,
            )
        except AlreadyExists:
            await self.c.call(
                self.c.images.Update,
                images_pb2.UpdateImageRequest(
                    image=img, update_mask=field_mask_pb2.FieldMask(paths=["target"])
                ),
                f"update {name}",
                lease=lease,
            )

    async def _local(self, name: str) -> ImageInfo | None:
        try:
            resp = await self.c.call(
                self.c.images.Get, images_pb2.GetImageRequest(name=name), "get image"
            )
        except NotFound:
            return None
        t = resp.image.target
        return ImageInfo(name, t.digest, t.size)

    # -- content -------------------------------------------------------------------------

    async def _content_exists(self, digest: str) -> bool:
        try:
            await self.c.call(self.c.content.Info, cpb.InfoRequest(digest=digest), "content info")
        except NotFound:
            return False
        return True

    async def _set_labels(self, digest: str, labels: dict[str, str]) -> None:
        await self.c.call(
            self.c.content.Update,
            cpb.UpdateRequest(
                info=cpb.Info(digest=digest, labels=labels),
                update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels]),
            ),
            f"label {digest}",
        )

    async def _put_small(
        self, desc: Descriptor, data: bytes, lease: str, labels: dict[str, str]
    ) -> None:
        if await self._content_exists(desc.digest):
            if labels:
                await self._set_labels(desc.digest, labels)
            return
        await self._shared(desc, lambda: self._write(desc, _once(data), lease, {}, lambda n: None))
        if labels:
            await self._set_labels(desc.digest, labels)

    async def _shared_fetch(
        self,
        dist: DistributionClient,
        ref: Reference,
        desc: Descriptor,
        lease: str,
        advance: Callable[[int], None],
    ) -> None:
        if await self._shared(desc, lambda: self._stream_blob(dist, ref, desc, lease, advance)):
            advance(desc.size)  # someone else fetched it: count it as done here too

    async def _shared(self, desc: Descriptor, write: Callable[[], Awaitable[None]]) -> bool:
        """Write a blob unless another pull (of any image) is already writing it.

        containerd locks an ingest ref while one writer holds it, so a second writer of the
        same blob would fail; it waits for the first instead. Returns True if it waited.
        """
        shared = self._blobs.get(desc.digest)
        if shared is not None:
            await asyncio.shield(shared)
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._blobs[desc.digest] = fut
        try:
            await write()
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(e)
                fut.exception()
            raise
        else:
            fut.set_result(None)
            return False
        finally:
            del self._blobs[desc.digest]

    async def _stream_blob(
        self,
        dist: DistributionClient,
        ref: Reference,
        desc: Descriptor,
        lease: str,
        advance: Callable[[int], None],
    ) -> None:
        resp = await dist.open_blob(ref, desc.digest)
        try:
            await self._write(desc, resp.iter_chunks(_CHUNK), lease, {}, advance)
        finally:
            resp.close()

    async def _write(
        self,
        desc: Descriptor,
        chunks: AsyncIterator[bytes],
        lease: str,
        labels: dict[str, str],
        advance: Callable[[int], None],
    ) -> None:
        """Stream ``chunks`` into Content.Write; verify size and digest before committing."""
        ingest = f"cloudless-{desc.digest}"
        md = self.c.metadata(lease)
        call = self.c.content.Write(metadata=md, timeout=_SLOW, wait_for_ready=True)
        hasher = hashlib.sha256()
        offset = 0
        try:
            async for chunk in chunks:
                hasher.update(chunk)
                await call.write(
                    cpb.WriteContentRequest(
                        action=cpb.WRITE,
                        ref=ingest,
                        total=desc.size,
                        expected=desc.digest,
                        offset=offset,
                        data=chunk,
                    )
                )
                offset += len(chunk)
                advance(len(chunk))
            actual = "sha256:" + hasher.hexdigest()
            if actual != desc.digest or offset != desc.size:
                call.cancel()
                await self._abort(ingest)
                raise DigestMismatch(
                    f"blob {desc.digest}: received {offset} bytes with digest {actual} "
                    f"(expected {desc.size} bytes); the registry or a proxy is corrupting data"
                )
            await call.write(
                cpb.WriteContentRequest(
                    action=cpb.COMMIT,
                    ref=ingest,
                    total=desc.size,
                    expected=desc.digest,
                    offset=offset,
                    labels=labels,
                )
            )
            await call.done_writing()
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as e:
            err = map_error(e, f"write blob {desc.digest}")
            if isinstance(err, AlreadyExists):
                return  # someone else committed it meanwhile
            raise err from None

    async def _abort(self, ingest: str) -> None:
        try:
            await self.c.call(self.c.content.Abort, cpb.AbortRequest(ref=ingest), "abort ingest")
        except Exception:
            pass

    # -- snapshots -----------------------------------------------------------------------

    async def _snapshot_exists(self, key: str) -> bool:
        try:
            await self.c.call(
                self.c.snapshots.Stat,
                snapshots_pb2.StatSnapshotRequest(snapshotter=self.snapshotter, key=key),
                "stat snapshot",
            )
        except NotFound:
            return False
        return True

    async def _unpack_layer(
        self, layer: Descriptor, chain: str, parent: str, diff_id: str, lease: str
    ) -> None:
        if await self._snapshot_exists(chain):
            return
        key = f"extract-{secrets.token_hex(6)} {chain}"
        labels = {"containerd.io/snapshot.ref": chain}
        sn = self.snapshotter
        try:
            prep = await self.c.call(
                self.c.snapshots.Prepare,
                snapshots_pb2.PrepareSnapshotRequest(
                    snapshotter=sn, key=key, parent=parent, labels=labels
                ),
                f"prepare snapshot for layer {layer.digest}",
                lease=lease,
            )
        except AlreadyExists:
            return
        try:
            applied = await self.c.call(
                self.c.diff.Apply,
                diff_pb2.ApplyRequest(
                    diff=descriptor_pb2.Descriptor(
                        media_type=layer.media_type, digest=layer.digest, size=layer.size
                    ),
                    mounts=prep.mounts,
                ),
                f"unpack layer {layer.digest}",
                lease=lease,
                timeout=_SLOW,
            )
            if applied.applied.digest != diff_id:
                raise DigestMismatch(
                    f"layer {layer.digest} unpacked to {applied.applied.digest}, but the image "
                    f"config says {diff_id}; the image is corrupt"
                )
            await self.c.call(
                self.c.snapshots.Commit,
                snapshots_pb2.CommitSnapshotRequest(
                    snapshotter=sn, name=chain, key=key, labels=labels
                ),
                f"commit snapshot {chain}",
                lease=lease,
            )
        except AlreadyExists:
            await self._remove_snapshot(key)
            return
        except BaseException:
            await self._remove_snapshot(key)
            raise
        await self._set_labels(layer.digest, {"containerd.io/uncompressed": diff_id})

    async def _remove_snapshot(self, key: str) -> None:
        try:
            await self.c.call(
                self.c.snapshots.Remove,
                snapshots_pb2.RemoveSnapshotRequest(snapshotter=self.snapshotter, key=key),
                "remove snapshot",
            )
        except Exception:
            pass


def first_error(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real failure in a task group (callers want one typed error, not a group)."""
    for e in eg.exceptions:
        if isinstance(e, BaseExceptionGroup):
            return first_error(e)
        if not isinstance(e, asyncio.CancelledError):
            return e
    return eg.exceptions[0]


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
