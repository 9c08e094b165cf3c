"""``nodes/<node-id>``: one record per node. Plain dicts until the model's Node is plugged."""

from cloudless.store.codec import DictCodec
from cloudless.store.tables import TableSpec

NODES = TableSpec("nodes", DictCodec("node", required=("id",)))
