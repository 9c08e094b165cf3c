"""The object store's etcd-backed parts run on both stores (``MemoryStore`` and real etcd)."""

from tests.contract.store.conftest import etcd_server, harness

__all__ = ["etcd_server", "harness"]
