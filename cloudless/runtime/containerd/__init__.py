"""containerd behind the runtime protocol: ``ContainerdRuntime`` (gRPC, no ``ctr``)."""

from cloudless.runtime.containerd.runtime import ContainerdRuntime

__all__ = ["ContainerdRuntime"]
