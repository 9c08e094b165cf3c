from __future__ import annotations

import pytest

from cloudless.security.token_store import InMemoryTokenStore, TokenStore
from tests.contract.security.token_store_contract import TokenStoreContract


class TestInMemoryTokenStore(TokenStoreContract):
    @pytest.fixture
    def store(self) -> TokenStore:
        return InMemoryTokenStore()
