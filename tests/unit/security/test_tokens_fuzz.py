"""Property: no string, and no one-character edit of a real token, gets past the checks or
escapes as anything but a typed ``TokenError``."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudless.lib.clock import FakeClock
from cloudless.security.ca import CertificateAuthority
from cloudless.security.errors import TokenError
from cloudless.security.tokens import InMemoryTokenStore, TokenManager, TokenUse
from tests.unit.security.helpers import T0, make_ca

_DIR = Path(tempfile.mkdtemp(prefix="cloudless-token-fuzz-"))
make_ca(_DIR / "ca")
_CA = CertificateAuthority.load(_DIR / "ca", clock=FakeClock(T0 + 10))
_TM = TokenManager(_CA, InMemoryTokenStore(), _CA.clock, bcrypt_cost=4)
_TOKEN = asyncio.run(_TM.create(TokenUse.NODE_ENROLLMENT)).token
shutil.rmtree(_DIR)

ALPHABET = "0123456789abcdefABCDEF:.-_=xyzCLD"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_string_is_refused_with_a_token_error(raw: str) -> None:
    try:
        _TM.check_signed(raw, TokenUse.NODE_ENROLLMENT)
    except TokenError:
        return
    raise AssertionError(f"accepted {raw!r}")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_TOKEN) - 1), st.sampled_from(ALPHABET))
def test_one_character_edits_are_refused(pos: int, ch: str) -> None:
    edited = _TOKEN[:pos] + ch + _TOKEN[pos + 1 :]
    try:
        _TM.check_signed(edited, TokenUse.NODE_ENROLLMENT)
    except TokenError:
        return
    # only edits that leave the signed bytes intact may pass the signed checks: the secret
    # (checked against bcrypt later) or unused base64 bits that decode to the same bytes
    secret_start = len("CLD1:") + 64 + 1
    last = len(_TOKEN) - 1  # the final base64 char carries 2 unused bits: same signature
    assert edited == _TOKEN or secret_start <= pos < secret_start + 32 or pos == last, (pos, ch)
    if secret_start <= pos < secret_start + 32 and edited != _TOKEN:
        try:
            asyncio.run(_TM.verify(edited, TokenUse.NODE_ENROLLMENT))
        except TokenError as exc:
            assert exc.code == "token_secret_mismatch"
        else:
            raise AssertionError("edited secret accepted")
