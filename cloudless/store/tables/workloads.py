"""``workloads/<workload-id>``: desired state of each workload (dicts until the model lands)."""

from cloudless.store.codec import DictCodec
from cloudless.store.tables import TableSpec

WORKLOADS = TableSpec("workloads", DictCodec("workload", required=("id",)))
