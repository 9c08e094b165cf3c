"""Typed errors of the network package; each names the field and the fix."""

from __future__ import annotations

from cloudless.lib.errors import CloudlessError, Conflict, ValidationError


class NetworkConfigError(ValidationError):
    """A cluster network setting (a range, a size) is unusable."""

    code = "invalid_network_config"


class AddressExhausted(CloudlessError):
    code = "address_exhausted"


class VipConflict(Conflict):
    code = "vip_conflict"


class NetworkEdgeError(CloudlessError):
    """A tool at an edge (a CNI plugin, nft, nebula) refused or failed; the message quotes it."""

    code = "network_edge"
