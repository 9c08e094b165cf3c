"""Build small OCI images in memory and push them with our own distribution client.

``build_busybox_image`` makes a one-layer image from the host's static ``/bin/busybox`` with
applet symlinks; ``build_tools_image`` adds a layer with host programs (``openssl``) and the
shared libraries they load; ``build_random_image`` a single layer of incompressible random
bytes (the pull benchmark). Both push blobs, config and manifest (and optionally an image
index with the node's platform plus a decoy) to a registry and return the reference.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from cloudless.devenv.registry import PrivateRegistry
from cloudless.runtime.oci.distribution import DistributionClient
from cloudless.runtime.oci.image import (
    MT_DOCKER_CONFIG,
    MT_DOCKER_LAYER_GZIP,
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
    MT_OCI_CONFIG,
    MT_OCI_INDEX,
    MT_OCI_LAYER_GZIP,
    MT_OCI_MANIFEST,
    go_arch,
    sha256_digest,
)
from cloudless.runtime.oci.reference import parse_reference

BUSYBOX = Path("/bin/busybox")
APPLETS = (
    "sh",
    "echo",
    "sleep",
    "cat",
    "httpd",
    "ls",
    "dd",
    "head",
    "env",
    "true",
    "false",
    "id",
    "ps",
    "kill",
    "trap",
    "wc",
    "yes",
    "pwd",
    "date",
    "tr",
    "seq",
    # examples/webapp.yaml (a CGI key-value store)
    "mkdir",
    "cp",
    "chmod",
    "mv",
    "rm",
    "sed",
    "printf",
    "sync",
    "test",
    "[",
    "wget",
    "timeout",
)


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def busybox_layer(busybox: Path = BUSYBOX) -> bytes:
    """An uncompressed layer tar: /bin/busybox, applet symlinks, /etc, /tmp, mount points."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "www"):
            _add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
        _add_file(tar, "bin/busybox", busybox.read_bytes(), 0o755)
        for a in APPLETS:
            info = tarfile.TarInfo(f"bin/{a}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        _add_file(
            tar,
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
        )
        _add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        _add_file(tar, "www/index.html", b"hello from cloudless\n")
    return buf.getvalue()


def busybox_layer_gz() -> tuple[bytes, str]:
    """(gzip-compressed busybox layer, its diff ID) for serving from a custom registry."""
    raw = busybox_layer()
    return gzip.compress(raw, compresslevel=1, mtime=0), sha256_digest(raw)


def programs_layer(programs: tuple[str, ...]) -> bytes:
    """An uncompressed layer tar holding the host's ``programs`` (found on ``PATH``) at their
    host paths, with every shared library ``ldd`` says they load (the dynamic loader too), so
    dynamically linked tools run on top of the busybox layer. Raises ``FileNotFoundError``
    naming a program that is not installed."""
    files: dict[str, Path] = {}
    for name in programs:
        found = shutil.which(name)
        if found is None:
            raise FileNotFoundError(f"{name} is not installed (scripts/install-system-deps)")
        files[found] = Path(found)
        out = subprocess.run(["ldd", found], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            # "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)" or "/lib64/ld-... (0x...)"
            path = line.split("=>")[-1].strip().split(" (")[0].strip()
            if path.startswith("/"):
                files[path] = Path(path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for target in sorted(files):
            parts = target.strip("/").split("/")
            for k in range(1, len(parts)):
                d = "/".join(parts[:k])
                if d not in dirs:
                    dirs.add(d)
                    _add_dir(tar, d)
            # read through symbolic links: the layer holds plain files at the paths used
            _add_file(tar, target.strip("/"), files[target].read_bytes(), 0o755)
    return buf.getvalue()


def random_layer(size: int, seed: bytes | None = None) -> bytes:
    """An uncompressed layer tar holding ``/data``: ``size`` random (incompressible) bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_file(tar, "data", os.urandom(size) if seed is None else _expand(seed, size))
    return buf.getvalue()


def _expand(seed: bytes, size: int) -> bytes:
    import hashlib

    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha512(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


async def push_image(
    registry: PrivateRegistry,
    name: str,
    tag: str,
    layers: list[bytes],
    *,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    as_index: bool = False,
    gzip_level: int = 1,
    docker: bool = False,
) -> str:
    """Push an image made of uncompressed ``layers``; returns ``host/name:tag``.

    ``as_index`` wraps it in an image index with a decoy entry for another architecture;
    ``docker`` uses Docker v2 schema 2 media types instead of OCI ones."""
    mt_manifest, mt_config, mt_layer, mt_index = (
        (MT_DOCKER_MANIFEST, MT_DOCKER_CONFIG, MT_DOCKER_LAYER_GZIP, MT_DOCKER_LIST)
        if docker
        else (MT_OCI_MANIFEST, MT_OCI_CONFIG, MT_OCI_LAYER_GZIP, MT_OCI_INDEX)
    )
    ref = parse_reference(registry.ref(name, tag))
    client = DistributionClient(registry.registry_config())
    try:
        compressed = await asyncio.to_thread(
            lambda: [gzip.compress(layer, compresslevel=gzip_level, mtime=0) for layer in layers]
        )
        diff_ids = [sha256_digest(x) for x in layers]
        layer_descs = []
        for blob in compressed:
            digest = await client.push_blob(ref, blob)
            layer_descs.append({"mediaType": mt_layer, "digest": digest, "size": len(blob)})

        async def manifest_for(arch: str) -> bytes:
            config = {
                "architecture": arch,
                "os": "linux",
                "config": {"Env": env or ["PATH=/bin:/usr/bin"], "Cmd": cmd or ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }
            config_bytes = json.dumps(config).encode()
            config_digest = await client.push_blob(ref, config_bytes)
            manifest = {
                "schemaVersion": 2,
                "mediaType": mt_manifest,
                "config": {
                    "mediaType": mt_config,
                    "digest": config_digest,
                    "size": len(config_bytes),
                },
                "layers": layer_descs,
            }
            return json.dumps(manifest).encode()

        mbytes = await manifest_for(go_arch())
        if not as_index:
            await client.put_manifest(ref, tag, mbytes, mt_manifest)
            return str(registry.ref(name, tag))
        entries = []
        # A decoy first: the puller must choose by platform, not by position.
        decoy_arch = "arm64" if go_arch() != "arm64" else "amd64"
        for arch, data in ((decoy_arch, await manifest_for(decoy_arch)), (go_arch(), mbytes)):
            digest = await client.put_manifest(ref, f"{tag}-{arch}", data, mt_manifest)
            entries.append(
                {
                    "mediaType": mt_manifest,
                    "digest": digest,
                    "size": len(data),
                    "platform": {"architecture": arch, "os": "linux"},
                }
            )
        index = {"schemaVersion": 2, "mediaType": mt_index, "manifests": entries}
        await client.put_manifest(ref, tag, json.dumps(index).encode(), mt_index)
        return str(registry.ref(name, tag))
    finally:
        await client.aclose()


async def build_busybox_image(
    registry: PrivateRegistry,
    name: str = "busybox",
    tag: str = "1",
    *,
    as_index: bool = False,
    docker: bool = False,
) -> str:
    """Push a busybox image (``sh``, ``httpd``, ``sleep``, ``echo``…); returns its reference."""
    layer = await asyncio.to_thread(busybox_layer)
    return await push_image(registry, name, tag, [layer], as_index=as_index, docker=docker)


async def build_tools_image(
    registry: PrivateRegistry,
    name: str = "tools",
    tag: str = "1",
    programs: tuple[str, ...] = ("openssl",),
) -> str:
    """Push busybox plus the host's ``programs`` and their libraries (``programs_layer``): an
    image whose replicas can, say, speak mutual TLS with ``openssl s_server``/``s_client``."""
    layers = await asyncio.to_thread(lambda: [busybox_layer(), programs_layer(programs)])
    return await push_image(registry, name, tag, layers)


async def build_random_image(
    registry: PrivateRegistry, name: str = "random", tag: str = "1", size: int = 64 << 20
) -> str:
    """Push a single-layer image of ``size`` incompressible bytes; returns its reference."""
    layer = await asyncio.to_thread(random_layer, size)
    return await push_image(registry, name, tag, [layer], gzip_level=1)
