"""``tokens/<token-id>``: bootstrap token records (see ``cloudless.store.tokens``)."""

from cloudless.store.codec import DictCodec
from cloudless.store.tables import TableSpec

TOKENS = TableSpec("tokens", DictCodec("token", required=("id",)))
