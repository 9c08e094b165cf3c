"""Bucket lifecycle through boto3 (Put/Get/DeleteBucketLifecycleConfiguration, refusals over
the wire) and the sweep on three loopback nodes at R=3: what is due is deleted or aborted
everywhere, what is not (or was rewritten since the listing) stays."""

from __future__ import annotations

import os
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cloudless.lib.clock import FakeClock
from cloudless.objectstore import lifecycle as lc
from cloudless.objectstore.lifecycle import DAY_S, Expirer, Rule
from cloudless.objectstore.testing import LoopbackCluster
from tests.integration.objectstore.conftest import S3Env, body

RULES = {
    "Rules": [
        {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
         "Expiration": {"Days": 30}},
        {"ID": "uploads", "Filter": {}, "Status": "Enabled",
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}},
    ]
}  # fmt: skip


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def test_put_get_delete_the_configuration(s3env: S3Env, s3: Any) -> None:
    s3.create_bucket(Bucket="lc-api")
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket="lc-api")
    assert code(e) == "NoSuchLifecycleConfiguration"
    s3.put_bucket_lifecycle_configuration(Bucket="lc-api", LifecycleConfiguration=RULES)
    got = s3.get_bucket_lifecycle_configuration(Bucket="lc-api")["Rules"]
    assert [(r["ID"], r["Status"]) for r in got] == [("logs", "Enabled"), ("uploads", "Enabled")]
    assert got[0]["Filter"] == {"Prefix": "logs/"} and got[0]["Expiration"] == {"Days": 30}
    assert got[1]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    s3.delete_bucket_lifecycle(Bucket="lc-api")
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket="lc-api")
    assert code(e) == "NoSuchLifecycleConfiguration"


BAD = [
    # (configuration boto3 sends, S3 code)
    ({"Rules": [{"ID": "t", "Filter": {}, "Status": "Enabled",
                 "Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]}]}, "NotImplemented"),
    ({"Rules": [{"ID": "z", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 0}}]},
     "InvalidArgument"),
    ({"Rules": [{"ID": "n", "Filter": {}, "Status": "Enabled"}]}, "InvalidArgument"),
    ({"Rules": [{"ID": "d", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 1}},
                {"ID": "d", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 2}}]},
     "InvalidArgument"),
    ({"Rules": [{"ID": "g", "Filter": {"Tag": {"Key": "k", "Value": "v"}}, "Status": "Enabled",
                 "Expiration": {"Days": 1}}]}, "NotImplemented"),
]  # fmt: skip


@pytest.mark.parametrize(("config", "want"), BAD)
def test_refused_configurations_change_nothing(
    s3env: S3Env, s3: Any, config: dict[str, Any], want: str
) -> None:
    if "lc-bad" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket="lc-bad")
        s3.put_bucket_lifecycle_configuration(Bucket="lc-bad", LifecycleConfiguration=RULES)
    with pytest.raises(ClientError) as e:
        s3.put_bucket_lifecycle_configuration(Bucket="lc-bad", LifecycleConfiguration=config)
    assert code(e) == want
    assert e.value.response["Error"]["Message"]  # names the problem
    got = s3.get_bucket_lifecycle_configuration(Bucket="lc-bad")["Rules"]
    assert [r["ID"] for r in got] == ["logs", "uploads"]  # the stored rules are untouched


def test_only_the_owner_sets_rules_and_readers_read_them(s3env: S3Env, s3: Any) -> None:
    s3.create_bucket(Bucket="lc-perm")
    bob = s3env.client(s3env.other)
    with pytest.raises(ClientError) as e:
        bob.put_bucket_lifecycle_configuration(Bucket="lc-perm", LifecycleConfiguration=RULES)
    assert code(e) == "AccessDenied"
    s3.put_bucket_lifecycle_configuration(Bucket="lc-perm", LifecycleConfiguration=RULES)
    s3env.node.call(s3env.node.node.iam.allow("lc-perm", s3env.other.key_id, "write"))
    assert len(bob.get_bucket_lifecycle_configuration(Bucket="lc-perm")["Rules"]) == 2
    for call in (bob.put_bucket_lifecycle_configuration, bob.delete_bucket_lifecycle):
        kw = {"LifecycleConfiguration": RULES} if "put" in call.__name__ else {}
        with pytest.raises(ClientError) as e:
            call(Bucket="lc-perm", **kw)
        assert code(e) == "AccessDenied"


async def test_the_sweep_deletes_and_aborts_what_is_due_on_every_node(
    cluster: LoopbackCluster,
) -> None:
    e1 = cluster.engine("n1")
    big = os.urandom(1_500_000)
    for key, data in (("logs/a", b"tiny"), ("logs/big", big), ("keep/x", b"stay")):
        await e1.put("b", key, body(data), content_type="t/x", user_meta={})
    old_up = await e1.create_upload("b", "logs/up", content_type="t/x", user_meta={})
    await e1.upload_part("b", "logs/up", old_up, 1, body(os.urandom(1000)))
    rules = (Rule("logs", True, "logs/", expire_days=30), Rule("up", True, abort_days=7))
    later = FakeClock(start=cluster.clock.now() + 40 * DAY_S)

    # Rewritten after the sweep's listing saw it: kept (delete_if compares versions).
    stale = await e1.head("b", "logs/a")
    assert stale is not None
    await e1.put("b", "logs/a", body(b"new"), content_type="t/x", user_meta={})
    assert not await e1.delete_if("b", "logs/a", stale.version)
    assert await e1.head("b", "logs/a") is not None

    done = await Expirer(cluster.engine("n2"), later).sweep("b", rules)
    assert done == lc.Swept(deleted=2, aborted=1)
    for n in ("n1", "n2", "n3"):
        e = cluster.engine(n)
        assert await e.head("b", "logs/a") is None and await e.head("b", "logs/big") is None
        assert await e.head("b", "keep/x") is not None
        assert (await e.list_uploads("b", prefix="", limit=100)).uploads == []
    # Nothing more is due: a second sweep (another node acting on a stale view) is a no-op.
    assert await Expirer(cluster.engine("n3"), later).sweep("b", rules) == lc.Swept()


async def test_a_sweep_stops_at_its_limit_and_the_next_goes_on(cluster: LoopbackCluster) -> None:
    e1 = cluster.engine("n1")
    for i in range(5):
        await e1.put("b", f"k{i}", body(b"x"), content_type="t/x", user_meta={})
    rules = (Rule("all", True, expire_days=1),)
    later = FakeClock(start=cluster.clock.now() + 3 * DAY_S)
    assert (await Expirer(e1, later, limit=3).sweep("b", rules)).deleted == 3
    assert (await Expirer(e1, later, limit=3).sweep("b", rules)).deleted == 2
    assert not (await e1.list_keys("b", prefix="", delimiter="", after="", limit=10)).keys
    # Not yet due, or disabled: nothing.
    await e1.put("b", "fresh", body(b"x"), content_type="t/x", user_meta={})
    assert await Expirer(e1, cluster.clock).sweep("b", rules) == lc.Swept()
    off = (Rule("all", False, expire_days=1),)
    assert await Expirer(e1, later).sweep("b", off) == lc.Swept()


async def test_a_date_at_the_epoch_still_expires(cluster: LoopbackCluster) -> None:
    """``Date`` 1970-01-01 is a midnight UTC like any other (stored as 0): its rule lists
    and deletes what it covers."""
    e1 = cluster.engine("n1")
    await e1.put("b", "old/x", body(b"x"), content_type="t/x", user_meta={})
    rules = (Rule("epoch", True, "old/", expire_date=0),)
    assert await Expirer(e1, cluster.clock).sweep("b", rules) == lc.Swept(deleted=1)
