"""Image references: ``[host[:port]/]path[:tag][@sha256:…]``, with Docker Hub's defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cloudless.lib.errors import ValidationError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::\d{1,5})?$"
)

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class Reference:
    host: str  # as written (``docker.io`` for Hub)
    path: str  # repository path (``library/busybox``)
    tag: str  # "latest" when neither tag nor digest given
    digest: str  # "" unless pinned

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.host == DOCKER_HUB else self.host

    @property
    def object(self) -> str:
        """What to ask the manifests endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        s = f"{self.host}/{self.path}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse_reference(ref: str) -> Reference:
    """Parse ``ref``; raise ``ValidationError`` saying what is malformed.

    >>> parse_reference("127.0.0.1:5000/busybox:1").path
    'busybox'
    >>> str(parse_reference("busybox"))
    'docker.io/library/busybox:latest'
    """
    if not ref or ref != ref.strip():
        raise ValidationError(f"image {ref!r}: empty or has surrounding spaces")
    rest, digest = ref, ""
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise ValidationError(f"image {ref!r}: digest must be sha256:<64 hex digits>")
    host = DOCKER_HUB
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, rest = first, remainder
        if not _HOST_RE.match(host):
            raise ValidationError(f"image {ref!r}: registry host {host!r} is not host[:port]")
    tag = ""
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise ValidationError(f"image {ref!r}: tag {tag!r} is not a valid tag")
    if host == DOCKER_HUB and "/" not in rest:
        rest = f"library/{rest}"
    if not _PATH_RE.match(rest):
        raise ValidationError(
            f"image {ref!r}: repository {rest!r} must be lowercase letters, digits and separators"
        )
    if not tag and not digest:
        tag = "latest"
    return Reference(host, rest, tag, digest)
