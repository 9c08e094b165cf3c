"""``ca/<name>``: CA material shared by coordinators (PEM text, dicts for now)."""

from cloudless.store.codec import DictCodec
from cloudless.store.tables import TableSpec

CA = TableSpec("ca", DictCodec("ca_material", required=("cert_pem",)))
