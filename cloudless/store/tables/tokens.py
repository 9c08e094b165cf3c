"""``tokens/<token-id>``: bootstrap token records (``cloudless.security.token_store``).

Only the bcrypt hash of a token's secret is stored. See ``cloudless.store.tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudless.security.token_store import TokenRecord
from cloudless.store.codec import Migration
from cloudless.store.tables import TableSpec


class TokenRecordCodec:
    kind = "token"
    version = 1
    migrations: Mapping[int, Migration] = {}

    def encode(self, value: TokenRecord) -> Any:
        return value.to_dict()

    def decode(self, data: Any) -> TokenRecord:
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        return TokenRecord.from_dict(data)


TOKENS = TableSpec("tokens", TokenRecordCodec())
