"""Image references: ``[host[:port]/]path[:tag][@sha256:…]``, with Docker Hub's defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cloudless.lib.bounded import show
from cloudless.lib.errors import ValidationError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
# digest := algorithm ":" encoded; the registered algorithms fix the encoded length.
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_DIGEST_HEX = {"sha256": 64}  # the one algorithm the puller verifies
MAX_NAME = 255  # the distribution spec's limit on host and repository together
_DOMAIN_COMPONENT = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::\d{{1,5}})?$"
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
        raise ValidationError(f"image {show(ref)}: empty or has surrounding spaces")
    if not ref.isprintable() or not ref.isascii():
        raise ValidationError(f"image {show(ref)}: has control or non-ASCII characters")
    shown = show(ref)
    rest, digest = ref, ""
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        algo, _, hexits = digest.partition(":")
        want = _DIGEST_HEX.get(algo)
        if (
            not _DIGEST_RE.match(digest)
            or want is None
            or len(hexits) != want
            or hexits.strip("0123456789abcdef")
        ):
            raise ValidationError(f"image {shown}: digest must be sha256:<64 lowercase hex digits>")
    host = DOCKER_HUB
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, rest = first, remainder
        if not _HOST_RE.match(host):
            raise ValidationError(f"image {shown}: registry host {show(host)} is not host[:port]")
    tag = ""
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise ValidationError(
                f"image {shown}: tag {show(tag)} must be 1-128 letters, digits, '_', '.' "
                "or '-', not starting with '.' or '-'"
            )
    if host == DOCKER_HUB and "/" not in rest:
        rest = f"library/{rest}"
    if not _PATH_RE.match(rest):
        raise ValidationError(
            f"image {shown}: repository {show(rest)} must be lowercase letters, digits and "
            "separators ('.', '_', '__', '-'), in '/'-separated components"
        )
    if len(host) + 1 + len(rest) > MAX_NAME:
        raise ValidationError(f"image {shown}: the name is longer than {MAX_NAME} characters")
    if not tag and not digest:
        tag = "latest"
    return Reference(host, rest, tag, digest)
