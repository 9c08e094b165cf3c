"""Reusable launchers for a developer/test environment: a private containerd, a private
docker-registry (plain, htpasswd, token auth or TLS), and images built and pushed from the host's
busybox. Everything runs as child processes on private sockets, ports and directories.

Public API: ``PrivateContainerd``, ``PrivateRegistry``, ``TokenServer``, ``build_busybox_image``,
``build_random_image``, ``push_image``, ``busybox_layer_gz``, ``containerd_available``,
``registry_available``, ``remove_cgroups``, ``htpasswd_line``; CLI: ``python -m cloudless.devenv
up``. (``cloudless.devenv.netns`` is a separate network-namespace lab.)
"""

from cloudless.devenv.containerd import PrivateContainerd, containerd_available, remove_cgroups
from cloudless.devenv.images import (
    build_busybox_image,
    build_random_image,
    busybox_layer_gz,
    push_image,
)
from cloudless.devenv.registry import PrivateRegistry, htpasswd_line, registry_available
from cloudless.devenv.token_server import TokenServer

__all__ = [
    "PrivateContainerd",
    "PrivateRegistry",
    "TokenServer",
    "build_busybox_image",
    "build_random_image",
    "busybox_layer_gz",
    "containerd_available",
    "htpasswd_line",
    "push_image",
    "registry_available",
    "remove_cgroups",
]
