"""Manifests, indexes and image configs: parsing and choosing, without I/O."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cloudless.runtime.errors import ImageNotFound, RuntimeFailure

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
LAYER_TYPES = (
    MT_OCI_LAYER,
    MT_OCI_LAYER_GZIP,
    MT_OCI_LAYER_ZSTD,
    MT_DOCKER_LAYER_GZIP,
    MT_DOCKER_LAYER_FOREIGN,
)
#: Accept header for manifest requests: every type we can handle.
MANIFEST_ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Descriptor:
        try:
            platform = d.get("platform") or {}
            return cls(str(d["mediaType"]), str(d["digest"]), int(d["size"]), platform)
        except (KeyError, TypeError, ValueError) as e:
            raise RuntimeFailure(f"malformed descriptor in manifest: missing {e}") from e


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]


def go_arch(machine: str | None = None) -> str:
    """This node's architecture in OCI/Go spelling (``x86_64`` -> ``amd64``)."""
    import platform

    m = machine or platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(m, m)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise RuntimeFailure(f"{what} is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise RuntimeFailure(f"{what} is not a JSON object")
    return doc


def media_type_of(doc: dict[str, Any], header_type: str) -> str:
    """The document's own mediaType, else the Content-Type, else guessed from its shape."""
    mt = str(doc.get("mediaType") or header_type.split(";")[0].strip())
    if mt in (*INDEX_TYPES, *MANIFEST_TYPES):
        return mt
    if "manifests" in doc:
        return MT_OCI_INDEX
    if "config" in doc and "layers" in doc:
        return MT_OCI_MANIFEST
    raise RuntimeFailure(f"unsupported manifest media type {mt!r} (schema 1 is not supported)")


def pick_platform(
    index: dict[str, Any], arch: str, os_: str = "linux", ref: str = ""
) -> Descriptor:
    """The index entry for ``os_/arch`` (variant ignored except arm64's v8 default)."""
    entries = [Descriptor.from_json(m) for m in index.get("manifests") or []]
    for d in entries:
        p = d.platform
        if p.get("os") == os_ and p.get("architecture") == arch and d.media_type in MANIFEST_TYPES:
            return d
    have = sorted({f"{d.platform.get('os')}/{d.platform.get('architecture')}" for d in entries})
    raise ImageNotFound(
        f"image {ref!r} has no {os_}/{arch} variant (it has: {', '.join(have) or 'none'}); "
        "build or push one for this node's platform"
    )


def parse_manifest(doc: dict[str, Any]) -> Manifest:
    try:
        config = Descriptor.from_json(doc["config"])
        layers = tuple(Descriptor.from_json(x) for x in doc.get("layers") or [])
    except KeyError as e:
        raise RuntimeFailure(f"image manifest lacks {e}") from e
    for layer in layers:
        if layer.media_type not in LAYER_TYPES:
            raise RuntimeFailure(f"unsupported layer media type {layer.media_type!r}")
    return Manifest(config, layers)


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI ChainIDs: chain[0] = diff[0]; chain[n] = sha256(chain[n-1] + " " + diff[n])."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else sha256_digest(f"{out[-1]} {d}".encode()))
    return out


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config that shape a container."""

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    diff_ids: tuple[str, ...] = ()
    os: str = ""
    architecture: str = ""

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ImageConfig:
        c = doc.get("config") or {}
        rootfs = doc.get("rootfs") or {}
        return cls(
            env=tuple(c.get("Env") or ()),
            entrypoint=tuple(c.get("Entrypoint") or ()),
            cmd=tuple(c.get("Cmd") or ()),
            working_dir=str(c.get("WorkingDir") or ""),
            user=str(c.get("User") or ""),
            diff_ids=tuple(rootfs.get("diff_ids") or ()),
            os=str(doc.get("os") or ""),
            architecture=str(doc.get("architecture") or ""),
        )

    def check_platform(self, arch: str, ref: str) -> None:
        """Refuse an image built for another OS/architecture (it would fail with the opaque
        "exec format error" at start)."""
        if (self.os and self.os != "linux") or (self.architecture and self.architecture != arch):
            raise ImageNotFound(
                f"image {ref!r} is built for {self.os or '?'}/{self.architecture or '?'}, but "
                f"this node is linux/{arch}; push a linux/{arch} variant (or a multi-platform "
                "index)"
            )
