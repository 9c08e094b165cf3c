"""The coordinator's embedded etcd member: certificates from the cluster CA, start, client."""

from __future__ import annotations

from cloudless.clusterops.etcd_tls import EtcdTlsFiles
from cloudless.coordinator.wiring.config import CoordinatorConfig, write_private
from cloudless.security.ca import CertificateAuthority
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.store.etcd import EtcdStore
from cloudless.store.etcd_process import EtcdMember, MemberConfig
from cloudless.store.tls import ETCD_SERVER_NAME, ClientTls, MemberTls


def issue_etcd_certs(config: CoordinatorConfig, ca: CertificateAuthority) -> None:
    """The member's serving certificate and this coordinator's client one, from the CA's
    issuing root (etcd reads them again at its next handshake)."""
    d = config.tls_dir
    sid = SpiffeId.service(f"etcd-{config.name}", config.trust_domain)
    key, cert = ca.issue(
        sid,
        CertKind.SERVICE,
        dns_names=(ETCD_SERVER_NAME, "localhost"),
        ip_addresses=sorted({config.host, "127.0.0.1"}),
    )
    write_private(d / "etcd-member.key", key)
    write_private(d / "etcd-member.crt", cert)
    ckey, ccert = ca.issue(
        SpiffeId.service(f"coordinator-{config.name}-etcd-client", config.trust_domain),
        CertKind.SERVICE,
    )
    write_private(d / "etcd-client.key", ckey)
    write_private(d / "etcd-client.crt", ccert)


def etcd_files(config: CoordinatorConfig) -> EtcdTlsFiles:
    d = config.tls_dir
    return EtcdTlsFiles(
        d / "etcd-ca.pem", d / "etcd-member.crt", d / "etcd-client.crt", d / "etcd-client.key"
    )


def etcd_tls(config: CoordinatorConfig, ca: CertificateAuthority) -> tuple[MemberTls, ClientTls]:
    """Issue (or reuse) the member's serving certificate and this coordinator's client one."""
    d = config.tls_dir
    if not (d / "etcd-member.crt").exists():
        issue_etcd_certs(config, ca)
    write_private(d / "etcd-ca.pem", ca.bundle_pem)
    member = MemberTls(d / "etcd-ca.pem", d / "etcd-member.crt", d / "etcd-member.key")
    return member, etcd_files(config).client_tls()


def member_config(config: CoordinatorConfig, tls: MemberTls) -> MemberConfig:
    return MemberConfig(
        name=config.name,
        data_dir=config.etcd_dir,
        host=config.host,
        client_port=config.etcd_client_port,
        peer_port=config.etcd_peer_port,
        tls=tls,
        heartbeat_ms=config.etcd_heartbeat_ms,
        election_ms=config.etcd_election_ms,
    )


async def start_embedded_etcd(
    config: CoordinatorConfig, ca: CertificateAuthority
) -> tuple[EtcdMember, EtcdStore]:
    member_tls, client_tls = etcd_tls(config, ca)
    mc = member_config(config, member_tls)
    config.etcd_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    member = EtcdMember(mc)
    await member.start()
    return member, EtcdStore([mc.endpoint], client_tls)


async def join_embedded_etcd(
    config: CoordinatorConfig, ca: CertificateAuthority, endpoints: list[str]
) -> tuple[EtcdMember, EtcdStore]:
    """Join the etcd cluster reachable at ``endpoints`` as a learner, then get promoted."""
    from cloudless.store.etcd_admin import EtcdAdmin
    from cloudless.store.membership import join

    member_tls, client_tls = etcd_tls(config, ca)
    mc = member_config(config, member_tls)
    config.etcd_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = EtcdStore(endpoints, client_tls)
    try:
        member, _ = await join(EtcdAdmin(existing), mc)
    finally:
        await existing.close()
    return member, EtcdStore([mc.endpoint, *endpoints], client_tls)
