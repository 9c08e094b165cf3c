"""The security package's TokenStore contract, run against StoreTokenStore on every Store."""

from __future__ import annotations

import uuid

import pytest

from cloudless.security.token_store import TokenStore
from cloudless.store.tokens import StoreTokenStore
from tests.contract.security.token_store_contract import TokenStoreContract

from .conftest import Harness


class TestStoreTokenStore(TokenStoreContract):
    @pytest.fixture
    def store(self, harness: Harness) -> TokenStore:
        return StoreTokenStore(harness.store, prefix=f"/t/{uuid.uuid4().hex[:8]}/tokens/")
