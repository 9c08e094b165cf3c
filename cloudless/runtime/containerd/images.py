"""Reading a pulled image back out of containerd: its config and top chain ID, cached."""

from __future__ import annotations

from cloudless.api.gen.containerd.services.content.v1 import content_pb2 as cpb
from cloudless.api.gen.containerd.services.images.v1 import images_pb2
from cloudless.lib.errors import NotFound
from cloudless.runtime.containerd.client import ContainerdClient
from cloudless.runtime.errors import ImageNotPulled
from cloudless.runtime.oci.image import (
    INDEX_TYPES,
    ImageConfig,
    chain_ids,
    media_type_of,
    parse_json,
    parse_manifest,
    pick_platform,
)
from cloudless.runtime.oci.reference import parse_reference


class ImageStore:
    def __init__(self, client: ContainerdClient, arch: str) -> None:
        self.c = client
        self.arch = arch
        self._cache: dict[str, tuple[ImageConfig, str]] = {}  # target digest -> (config, chain)

    @staticmethod
    def name_of(ref: str) -> str:
        return str(parse_reference(ref))

    async def resolve(self, ref: str) -> tuple[str, ImageConfig, str]:
        """(image name, config, top chain ID) of a pulled image; ``ImageNotPulled`` if absent."""
        name = self.name_of(ref)
        try:
            resp = await self.c.call(
                self.c.images.Get, images_pb2.GetImageRequest(name=name), f"get image {name}"
            )
        except NotFound:
            raise ImageNotPulled(ref) from None
        target = resp.image.target
        hit = self._cache.get(target.digest)
        if hit is None:
            hit = await self._load(name, target.digest, target.media_type)
            self._cache[target.digest] = hit
        return name, hit[0], hit[1]

    async def _load(self, name: str, digest: str, media_type: str) -> tuple[ImageConfig, str]:
        doc = parse_json(await self.read(digest), f"manifest of {name}")
        if media_type_of(doc, media_type) in INDEX_TYPES:
            chosen = pick_platform(doc, self.arch, ref=name)
            doc = parse_json(await self.read(chosen.digest), f"manifest of {name}")
        manifest = parse_manifest(doc)
        config = ImageConfig.from_json(
            parse_json(await self.read(manifest.config.digest), f"config of {name}")
        )
        chains = chain_ids(list(config.diff_ids))
        return config, chains[-1] if chains else ""

    async def read(self, digest: str) -> bytes:
        try:
            parts = []
            async for msg in self.c.content.Read(
                cpb.ReadContentRequest(digest=digest),
                metadata=self.c.metadata(),
                timeout=self.c.timeout,
                wait_for_ready=True,
            ):
                parts.append(msg.data)
            return b"".join(parts)
        except Exception as e:  # grpc errors: the blob vanished (GC) or containerd is away
            raise NotFound(f"image blob {digest} unreadable ({e}); pull the image again") from e
