"""ListMultipartUploads paging decided in pure code (``engine.page_uploads``)."""

from __future__ import annotations

import pytest

from cloudless.objectstore.engine import page_uploads
from cloudless.objectstore.records import Upload


def up(uid: str) -> Upload:
    return Upload(uid, 0.0, "binary/octet-stream", {})


LIVE = [
    ("b", up("2")),
    ("a", up("9")),
    ("a", up("1")),
    ("dir/x", up("5")),
    ("dir/y", up("6")),
    ("c", up("3")),
    ("dir2/z", up("7")),
]


def listed(**kw: object) -> tuple[list[str], list[str], bool, str, str]:
    args: dict[str, object] = {
        "prefix": "",
        "delimiter": "",
        "key_marker": "",
        "upload_id_marker": "",
        "limit": 1000,
    }
    args.update(kw)
    page = page_uploads(LIVE, **args)  # type: ignore[arg-type]
    return (
        [f"{k}:{u.upload_id}" for k, u in page.uploads],
        page.prefixes,
        page.truncated,
        page.next_key,
        page.next_upload_id,
    )


ALL = ["a:1", "a:9", "b:2", "c:3", "dir/x:5", "dir/y:6", "dir2/z:7"]

CASES = [
    # (name, arguments, uploads, prefixes, truncated, next key, next upload id)
    ("everything, in key then id order", {}, ALL, [], False, "dir2/z", "7"),
    ("a page of 3", {"limit": 3}, ALL[:3], [], True, "b", "2"),
    ("after key a", {"key_marker": "a"}, ALL[2:], [], False, "dir2/z", "7"),
    ("after a:1", {"key_marker": "a", "upload_id_marker": "1"}, ALL[1:], [], False, "dir2/z", "7"),
    (
        "id marker without key marker: ignored",
        {"upload_id_marker": "5"},
        ALL,
        [],
        False,
        "dir2/z",
        "7",
    ),
    ("prefix", {"prefix": "dir/"}, ["dir/x:5", "dir/y:6"], [], False, "dir/y", "6"),
    ("delimiter", {"delimiter": "/"}, ALL[:4], ["dir/", "dir2/"], False, "dir2/", ""),
    (
        "delimiter, page ends on a prefix",
        {"delimiter": "/", "limit": 5},
        ALL[:4],
        ["dir/"],
        True,
        "dir/",
        "",
    ),
    (
        "delimiter, after a prefix",
        {"delimiter": "/", "key_marker": "dir/"},
        [],
        ["dir2/"],
        False,
        "dir2/",
        "",
    ),
    ("nothing asked", {"limit": 0}, [], [], True, "", ""),
    ("past the end", {"key_marker": "zzz"}, [], [], False, "", ""),
]


@pytest.mark.parametrize(
    ("kw", "uploads", "prefixes", "truncated", "next_key", "next_id"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_page_uploads(
    kw: dict[str, object],
    uploads: list[str],
    prefixes: list[str],
    truncated: bool,
    next_key: str,
    next_id: str,
) -> None:
    assert listed(**kw) == (uploads, prefixes, truncated, next_key, next_id)


def test_pages_joined_are_the_whole_listing() -> None:
    for limit in range(1, 9):
        seen: list[str] = []
        key, uid = "", ""
        while True:
            got, _, truncated, key, uid = listed(limit=limit, key_marker=key, upload_id_marker=uid)
            seen += got
            if not truncated:
                break
        assert seen == ALL, limit
