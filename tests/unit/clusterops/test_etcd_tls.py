"""What the embedded etcd member does about its TLS in each rotation phase
(``etcd_tls.etcd_tls_plan``), and reading its state from real certificate files."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudless.clusterops.etcd_tls import (
    EtcdTlsFiles,
    EtcdTlsPlan,
    EtcdTlsState,
    etcd_tls_plan,
    read_state,
)
from cloudless.lib.clock import FakeClock
from cloudless.security.ca import CertificateAuthority
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.security.root_rotation import begin_root_rotation, switch_to_next_root

OLD, NEW = "o" * 64, "n" * 64

# (state: trusted file, member issuer, client issuer; CA bundle; issuing; ahead of me; plan)
CASES = [
    # nothing to do: the file trusts what the CA trusts, both certs from the issuing root
    (EtcdTlsState((OLD,), OLD, OLD), (OLD,), OLD, [], EtcdTlsPlan(False, False)),
    # trust: the CA trusts both, the file only the old root -> restart (my turn)
    (EtcdTlsState((OLD,), OLD, OLD), (OLD, NEW), OLD, [], EtcdTlsPlan(False, True)),
    # ... not my turn: c1 has not restarted its member yet
    (
        EtcdTlsState((OLD,), OLD, OLD),
        (OLD, NEW),
        OLD,
        ["c1"],
        EtcdTlsPlan(False, True, "waiting for c1 to restart theirs"),
    ),
    # issue: the new root issues -> new certificates, no restart (files are re-read)
    (EtcdTlsState((OLD, NEW), OLD, OLD), (NEW, OLD), NEW, ["c1"], EtcdTlsPlan(True, False)),
    # only the client certificate left behind (a crash between the two writes)
    (EtcdTlsState((OLD, NEW), NEW, OLD), (OLD, NEW), NEW, [], EtcdTlsPlan(True, False)),
    # retire: the CA trusts only the new root -> restart to drop the old one
    (EtcdTlsState((OLD, NEW), NEW, NEW), (NEW,), NEW, [], EtcdTlsPlan(False, True)),
    # ... one member at a time, like trust
    (
        EtcdTlsState((OLD, NEW), NEW, NEW),
        (NEW,),
        NEW,
        ["c1", "c2"],
        EtcdTlsPlan(False, True, "waiting for c1, c2 to restart theirs"),
    ),
    # done: the file trusts what the CA trusts -> nothing
    (EtcdTlsState((NEW,), NEW, NEW), (NEW,), NEW, [], EtcdTlsPlan(False, False)),
    # the next rotation's trust: a root the file lacks -> restart
    (EtcdTlsState((NEW,), NEW, NEW), (NEW, "x" * 64), NEW, [], EtcdTlsPlan(False, True)),
    # revert (abort in issue): the old root issues again -> certificates from it
    (EtcdTlsState((OLD, NEW), NEW, NEW), (OLD, NEW), OLD, [], EtcdTlsPlan(True, False)),
    # untrust: the CA dropped the new root -> restart to drop it from the file too
    (EtcdTlsState((OLD, NEW), OLD, OLD), (OLD,), OLD, [], EtcdTlsPlan(False, True)),
    # a certificate signed by a root nobody knows ("") is re-issued
    (EtcdTlsState((OLD,), "", OLD), (OLD,), OLD, [], EtcdTlsPlan(True, False)),
]


@pytest.mark.parametrize(("state", "bundle", "issuing", "ahead", "plan"), CASES)
def test_plan(
    state: EtcdTlsState, bundle: tuple[str, ...], issuing: str, ahead: list[str], plan: EtcdTlsPlan
) -> None:
    got = etcd_tls_plan(state, bundle, issuing, ahead)
    assert (got.reissue, got.restart) == (plan.reissue, plan.restart)
    assert (plan.wait in got.wait) if plan.wait else got.wait == ""


def test_read_state_from_files(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", clock=FakeClock(), root_key_size=2048)
    old = ca.digest
    files = EtcdTlsFiles(
        tmp_path / "etcd-ca.pem", tmp_path / "m.crt", tmp_path / "c.crt", tmp_path / "c.key"
    )

    def issue(path: Path) -> None:
        _, cert = ca.issue(SpiffeId.service("etcd-x", ca.trust_domain), CertKind.SERVICE)
        path.write_bytes(cert)

    issue(files.member_cert)
    issue(files.client_cert)
    running = ca.bundle_pem
    assert read_state(ca, files, running) == EtcdTlsState((old,), old, old)
    begin_root_rotation(ca, root_key_size=2048)
    switch_to_next_root(ca)
    issue(files.member_cert)
    # the member still runs with the old file; the member cert is new, the client one old
    assert read_state(ca, files, running) == EtcdTlsState((old,), ca.digest, old)
    # a missing certificate reads as issued by no known root
    files.client_cert.unlink()
    assert read_state(ca, files, b"").client_issuer == ""
