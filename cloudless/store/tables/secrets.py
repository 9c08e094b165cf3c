"""``secrets/<name>``: sealed secrets (``security.secretbox.Sealed``; never a value in clear),
and ``config/secrets`` holding the current key generation."""

from cloudless.store.codec import DictCodec
from cloudless.store.tables import TableSpec

SECRETS = TableSpec("secrets", DictCodec("secret", required=("name",)))
GENERATION = "secrets"  # the config/<name> document: {"generation": n}
