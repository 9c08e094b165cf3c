"""``secrets/<name>``: sealed secrets (``security.secretbox.Sealed``; never a value in clear),
``configs/<name>``: sealed configs (type ``config``, a name space of their own, so a config and
a secret may share a name), and ``config/secrets`` holding the current key generation.

Configs written before they had their own table are records of type ``config`` in
``secrets/``; they are read where they are (no migration step) and move to ``configs/`` the
next time anything is written under their name (``userapi.secrets_routes``)."""

from cloudless.store.codec import DictCodec
from cloudless.store.tables import TableSpec

SECRETS = TableSpec("secrets", DictCodec("secret", required=("name",)))
CONFIGS = TableSpec("configs", DictCodec("config", required=("name",)))
GENERATION = "secrets"  # the config/<name> document: {"generation": n}
