"""The framing of the node-to-node batch call (``rpc.pack_batch``/``unpack_batch``): blocks
travel raw after a JSON head, and a body that does not add up is refused naming why."""

from __future__ import annotations

import json

import pytest

from cloudless.objectstore.rpc import pack_batch, unpack_batch


def test_a_batch_round_trips_with_its_blocks_raw() -> None:
    head = {"reads": [["objects", "b/k"]], "rows": [["block_refs", "h/v", 3, 1, "n1", "MQ=="]]}
    blocks = [("a" * 64, b"\x00" * 5), ("b" * 64, b""), ("c" * 64, bytes(range(256)))]
    body = pack_batch(head, blocks)
    assert bytes(range(256)) in body  # not base64
    got_head, got_blocks = unpack_batch(body)
    assert got_head["reads"] == head["reads"] and got_head["rows"] == head["rows"]
    assert got_blocks == blocks


def _framed(head: object, tail: bytes = b"") -> bytes:
    meta = json.dumps(head).encode()
    return len(meta).to_bytes(4, "big") + meta + tail


OK_HEAD = {"reads": [], "rows": [], "blocks": [["a" * 64, 3]]}

BAD = [
    # (body, what the error names)
    (b"\x00\x00", "shorter than its 4-byte length prefix"),
    ((999).to_bytes(4, "big") + b"{}", "runs past the body"),
    (_framed("not a dict"), "head"),
    (_framed({"reads": [], "rows": []}), "head"),  # no blocks
    (_framed({"reads": {}, "rows": [], "blocks": []}), "must be lists"),
    (_framed({"reads": [], "rows": [], "blocks": [["a", "x"]]}), "head"),  # size not a number
    (_framed(OK_HEAD, b"ab"), "runs past the body"),  # a block cut short
    (_framed({**OK_HEAD, "blocks": [["a", -1]]}), "runs past the body"),
    (_framed(OK_HEAD, b"abcd"), "1 bytes after the last block"),
    (b"\x00\x00\x00\x02{x", "head"),  # not JSON
]


@pytest.mark.parametrize(("body", "why"), BAD)
def test_a_body_that_does_not_add_up_is_refused_naming_why(body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        unpack_batch(body)
