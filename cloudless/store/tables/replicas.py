"""``replicas/<workload-id>/<replica-id>``: replicas and their node assignment.

Listing one workload's replicas is a prefix read: ``replica_name(workload_id, "")``.
"""

from cloudless.store.codec import DictCodec
from cloudless.store.tables import TableSpec

REPLICAS = TableSpec("replicas", DictCodec("replica", required=("id", "workload_id")))


def replica_name(workload_id: str, replica_id: str) -> str:
    return f"{workload_id}/{replica_id}"
