"""Workload identity, network policy, root rotation and a departure on a real cluster: one
coordinator (with its etcd member) and two agents, each in its own network namespace with its
own containerd, the overlay network on, all real processes. One cluster (one start-up for
CI's time budget), four acts:

1. **Mutual TLS between workloads.** ``tls-srv`` (on node-1) runs ``openssl s_server`` with
   the SVID, key and bundle mounted at /run/cloudless/identity, requiring a client
   certificate from the bundle, and starts it again when those files change (as a real
   server would reload them); ``tls-cli`` (on node-2) connects through the service address
   with its own SVID and gets its line back reversed.
2. **Network policy on one device.** ``np-ok`` and ``np-no`` run on node-1 beside
   ``tls-srv``; the policy ``srv-ingress`` denies ``role=denied`` into ``tls-srv``. Through
   the service address (DNAT, then bridged on ``cl0`` to the backend: the same-device path)
   ``np-ok`` still gets its answer, ``np-no`` gets nothing (its packets are dropped).
3. **``cloudless ca rotate --overlap 0`` to ``done``** while both agents run these replicas:
   no container restarted (same task pids, 0 restarts), no agent stream re-opened (the
   coordinator's ``cloudless_agent_sessions_opened_total`` unchanged) and both nodes
   ``ready`` at every sample; afterwards every SVID comes from the new root and every bundle
   holds the new root only, mutual TLS between the replicas works on the new root, the policy
   still holds; the old root is refused everywhere: ``tls-cli``'s old SVID by ``tls-srv``,
   the old admin certificate by the HTTPS API, the old node certificate by the agent port, a
   join token made before the switch at enrolment; a new node enrolls from the new root.
4. **A planned departure.** ``cloudless agent leave`` on the agent holding ``web``'s one
   replica: the replacement's container is running (and its replica ready) on the other
   agent before the leaving agent stops its own. Measured from both sides, every 50 ms
   during the whole leave: the replicas the API calls ready, and the RUNNING containerd tasks
   of the workload over both hosts; neither drops to zero. Then the agent has exited 0 and
   its node is departed.

The image is busybox plus the host's ``openssl`` with its libraries
(``cloudless.devenv.images.build_tools_image``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from cloudless.agent.identity import channel_options, enroll
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.cli.client import Client, ClientConfig
from cloudless.devenv.cluster import AGENT_PORT, NetnsCluster, unavailable_reason, wait_until
from cloudless.devenv.images import build_tools_image
from cloudless.lib.errors import CloudlessError
from cloudless.security import svid
from cloudless.security.bundle import TrustBundle, trust_report

NO_OPENSSL = "openssl is not installed (scripts/install-system-deps)"
SKIP = unavailable_reason() or (None if shutil.which("openssl") else NO_OPENSSL)
pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(SKIP), reason=SKIP or "")]

PORT = 8443
ID = svid.MOUNT_PATH
# The server serves one connection per s_server run and starts it again when its files change
# (a renewal swaps them): a replica follows its renewed SVID and bundle without a restart.
SERVE = (
    f"trap 'exit 0' TERM; cd {ID}; while true; do f=$(cat svid.pem bundle.pem); "
    f"openssl s_server -quiet -rev -naccept 1 -accept {PORT} -cert svid.pem -key svid.key "
    "-CAfile bundle.pem -Verify 1 -verify_return_error </dev/null & p=$!; "
    'while kill -0 $p 2>/dev/null && [ "$(cat svid.pem bundle.pem)" = "$f" ]; do sleep 0.2; '
    "done; kill $p 2>/dev/null; wait $p; done"
)
IDLE = "trap 'exit 0' TERM; while true; do sleep 1; done"
WEB = (
    "name: web\nimage: {image}\n"
    "command: [sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 1; done']\n"
    "resources: {{cpu: 10m, memory: 8Mi}}\nreplicas: 1\n"
)
POLICY = b"""
name: srv-ingress
namespace: default
selector: {app: tls-srv}
ingress:
  - action: deny
    from: [{namespace: default, selector: {role: denied}}]
"""


def spec(name: str, image: str, zone: str, command: str, labels: dict[str, str]) -> bytes:
    doc: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": ["sh", "-c", command],
        "labels": labels,
        "resources": {"cpu": "10m", "memory": "16Mi"},
        "replicas": 1,
        "placement": {"node_selector": [{"key": "zone", "operator": "in", "values": [zone]}]},
    }
    if name == "tls-srv":
        doc["ports"] = [PORT]
    return json.dumps(doc).encode()


def ping(cert: str = f"{ID}/svid.pem", key: str = f"{ID}/svid.key", limit: int = 4) -> list[str]:
    """Mutual TLS to tls-srv's service address (``{vip}``) as the replica running it: a line
    out, the server's reversed line back; CLOSE ends the server's side. ``cert=""``: none."""
    mine = f"-cert {cert} -key {key} " if cert else ""
    return [
        "sh", "-c",
        f"printf 'ping\\nCLOSE\\n' | timeout {limit} openssl s_client -quiet "
        f"-connect {{vip}}:{PORT} {mine}-CAfile {ID}/bundle.pem -verify_return_error 2>&1",
    ]  # fmt: skip


class Rig:
    def __init__(self, c: NetnsCluster) -> None:
        self.c = c
        self.vip = ""

    def replica(self, workload: str) -> dict[str, Any]:
        [r] = [x for x in self.c.api.workload(workload)["replicas"] if x["desired"] == "running"]
        return dict(r)

    async def run_in(self, workload: str, argv: list[str], limit: float = 10) -> tuple[int, str]:
        r = await asyncio.to_thread(self.replica, workload)
        i = self.c.node_ids.index(r["node_id"])
        argv = [a.replace("{vip}", self.vip) for a in argv]
        return await self.c.exec_in(i, r["id"], argv, time_limit=limit)

    async def mtls(self, workload: str, within: float = 0.0) -> str:
        """tls-srv's answer to ``workload``: ``gnip`` (reversed) when both sides accepted.
        A refused or reset connection (s_server between two runs) is tried again for 4 s;
        any other failure only with ``within`` (for that many more seconds)."""
        deadline = time.monotonic() + 4.0 + within
        while True:
            rc, out = await self.run_in(workload, ping())
            if rc == 0 and "gnip" in out:
                return out
            # between two s_server runs (one per connection, restarted on renewal): no
            # listener, or a connection left in the ending one's backlog (reset, errno 104)
            refused = "onnection refused" in out or "errno=104" in out
            if time.monotonic() > deadline or not (refused or within):
                raise AssertionError(f"{workload}: no mutual TLS with tls-srv: {out}")
            await asyncio.sleep(0.2)

    async def refused(self, workload: str, cert: str, key: str = "") -> str:
        """tls-srv refuses ``workload``'s handshake (an answer, not a timeout or a refused
        connection: the TLS layer said no). Under TLS 1.3 the client's handshake ends before
        the server checks its certificate, so the client either reads the server's alert or,
        when its first write reaches the closed socket first, gets a reset (errno 104)."""
        for _ in range(20):
            _, out = await self.run_in(workload, ping(cert, key))
            if "onnection refused" not in out:
                break
            await asyncio.sleep(0.2)
        assert "gnip" not in out, out
        assert "alert" in out or "errno=104" in out, out
        return out

    async def dropped(self, workload: str) -> bool:
        """``workload``'s connection to tls-srv gets no answer at all within 2 s: busybox's
        ``timeout`` ends openssl with SIGTERM (143). An allowed exchange takes milliseconds;
        a refused connection or a TLS error ends sooner with another code."""
        rc, out = await self.run_in(workload, ping(limit=2))
        return rc == 143 and "gnip" not in out

    async def identity(self, workload: str) -> tuple[str, str, str]:
        """What ``workload``'s replica reads at /run/cloudless/identity: its certificate, the
        bundle and its key."""
        sep = "=====\n"
        rc, out = await self.run_in(
            workload, ["sh", "-c", f"cd {ID} && cat svid.pem && echo ===== && cat bundle.pem "
                       "&& echo ===== && cat svid.key"]
        )  # fmt: skip
        assert rc == 0, out
        cert, bundle, key = out.split(sep)
        return cert, bundle, key

    def pids(self) -> dict[str, str]:
        """Every running task (= replica id) with its pid, over both agents."""
        out: dict[str, str] = {}
        for i in range(self.c.n_agents):
            ctr = ["ctr", "-a", self.c.containerds[i].address, "-n", self.c.namespace]
            ts = subprocess.run([*ctr, "tasks", "ls"], capture_output=True, text=True, check=True)
            for line in ts.stdout.splitlines()[1:]:
                cid, pid, status = line.split()[:3]
                if status == "RUNNING":
                    out[cid] = pid
        return out

    def sessions_opened(self) -> float:
        resp = self.c.api.open("GET", "/metrics")
        text = resp.read().decode()
        m = re.search(r"^cloudless_agent_sessions_opened_total (\S+)$", text, re.M)
        assert m, "no cloudless_agent_sessions_opened_total in /metrics"
        return float(m.group(1))


def ready_web(c: NetnsCluster) -> list[dict[str, Any]]:
    reps = c.api.workload("web")["replicas"]
    return [r for r in reps if r["desired"] == "running" and r["ready"]]


def _issuer(pem: str, roots: TrustBundle) -> str:
    """The digest of the root in ``roots`` that signed ``pem`` ("" for none)."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    for digest, root in zip(roots.digests, roots.roots, strict=True):
        try:
            cert.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return digest
    return ""


@pytest.mark.timeout(420)
async def test_mtls_policy_rotation_and_departure(tmp_path: Path) -> None:
    t0 = time.monotonic()
    took: dict[str, float] = {}

    def lap(what: str, since: float) -> float:
        took[what] = time.monotonic() - since
        return time.monotonic()

    async with NetnsCluster(
        tmp_path, coordinators=1, agents=2, prefix="clsec", namespace="clsec", network="on"
    ) as c:
        assert c.registry is not None
        image = await build_tools_image(c.registry)
        t = lap("cluster and image", t0)
        rig = Rig(c)
        for name, zone, cmd, labels in (
            ("tls-srv", "zone-a", SERVE, {"app": "tls-srv"}),
            ("tls-cli", "zone-b", IDLE, {"app": "tls-cli"}),
            ("np-ok", "zone-a", IDLE, {"role": "allowed"}),
            ("np-no", "zone-a", IDLE, {"role": "denied"}),
        ):
            c.api.apply(spec(name, image, zone, cmd, labels))
        names = ("tls-srv", "tls-cli", "np-ok", "np-no")

        def all_running() -> bool:
            return all(rig.replica(n)["observed"] == "running" for n in names)

        await wait_until("4 replicas running", all_running, 120)
        svc = await wait_until(
            "tls-srv's service with its endpoint",
            lambda: (s := c.api.call("GET", "/v1/services/tls-srv")).get("endpoints") and s,
            60,
        )
        rig.vip = svc["vip"]
        assert {rig.replica(n)["node_id"] for n in ("tls-srv", "np-ok", "np-no")} == {c.node_ids[0]}
        assert rig.replica("tls-cli")["node_id"] == c.node_ids[1]
        t = lap("replicas running", t)

        # -- 1. mutual TLS across devices, each side with its own SVID ----------------------
        await rig.mtls("tls-cli", within=30)  # once the overlay's tunnels are up
        old_cert, old_bundle_pem, old_key = await rig.identity("tls-cli")
        old_bundle = TrustBundle.from_pem(old_bundle_pem.encode())
        assert _issuer(old_cert, old_bundle) == old_bundle.digests[0]
        await rig.refused("tls-cli", cert="")  # no client certificate: the server wants one
        t = lap("mutual TLS", t)

        # -- 2. network policy on one device, through the service address -------------------
        await rig.mtls("np-no", within=10)  # open before the policy: the path itself works
        c.api.call("POST", "/v1/netpolicies", raw=POLICY, content_type="application/yaml")
        await wait_until_async("np-no's packets dropped", lambda: rig.dropped("np-no"), 30)
        t = lap("policy enforced", t)
        await rig.mtls("np-ok")  # allowed: same namespace, not denied
        await rig.mtls("tls-cli")  # another device, allowed
        t = lap("policy checks", t)

        # -- 3. root rotation on the live cluster --------------------------------------------
        pids = await asyncio.to_thread(rig.pids)
        assert all(rig.replica(n)["id"] in pids for n in names)
        opened = await asyncio.to_thread(rig.sessions_opened)
        old_admin = _copy_config(c.admin_config, tmp_path / "old-admin")
        old_node = c.agent_dir(0) / "identity"
        old_node_creds = (old_node / "node.key").read_bytes(), (old_node / "node.crt").read_bytes()
        early_token = await asyncio.to_thread(c.api.create_token)
        states: list[tuple[float, list[str]]] = []
        stop = threading.Event()

        def sample() -> None:
            """Both nodes' states every 0.2 s, read with the admin config as the CLI leaves
            it (it renews the config's certificate and drops the old root as it goes; it
            writes the key and the certificate one after the other, so a read that lands
            between them is tried again)."""
            while not stop.is_set():
                for _ in range(3):
                    try:
                        nodes = Client(ClientConfig.load(c.admin_config), timeout=5).nodes()
                    except Exception as e:  # recorded if the retries fail too, not ignored
                        got = [f"error: {e}"]
                        time.sleep(0.05)
                    else:
                        got = [n["state"] for n in nodes]
                        break
                states.append((time.monotonic(), got))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        t_rot = time.monotonic()
        try:
            rot = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "cloudless", "ca", "rotate", "--overlap", "0"],
                capture_output=True, text=True, timeout=180,
                env={**os.environ, "CLOUDLESS_CONFIG": str(c.admin_config)},
            )  # fmt: skip
        finally:
            stop.set()
            await asyncio.to_thread(sampler.join)
        t = lap("ca rotate", t_rot)
        assert rot.returncode == 0, rot.stdout + rot.stderr
        assert "no longer trusted" in rot.stdout, rot.stdout
        c.reload_client()  # the old one trusts the retired root

        status = c.api.call("GET", "/v1/ca/status")
        assert status["rotation_run"]["phase"] == "done"
        [root] = status["roots"]
        new = root["digest"]
        assert new != old_bundle.digests[0]

        # nothing was interrupted
        assert await asyncio.to_thread(rig.pids) == pids
        assert all(rig.replica(n)["restarts"] == 0 for n in names)
        assert await asyncio.to_thread(rig.sessions_opened) == opened, "an agent stream re-opened"
        assert states and all(s == ["ready", "ready"] for _, s in states), [
            s for s in states if s[1] != ["ready", "ready"]
        ]
        own = (c.work / "c1" / "tls" / "coordinator.crt").read_bytes()
        assert trust_report(own, c.api.config.ca_file.read_bytes()) == ([new], new)
        admin = c.api.config  # the CLI renewed the admin config and dropped the old root
        assert trust_report(admin.cert_file.read_bytes(), admin.ca_file.read_bytes()) == (
            [new],
            new,
        )
        for i in range(2):  # the agents' own certificates and bundles are on the new root
            ident = c.agent_dir(i) / "identity"
            cert, ca = (ident / "node.crt").read_bytes(), (ident / "ca.pem").read_bytes()
            report = trust_report(cert, ca)
            assert report == ([new], new), report

        # every SVID re-issued from the new root, every bundle holding it alone
        seen = await asyncio.gather(*(rig.identity(n) for n in names))
        for n, (cert_pem, bundle_pem, _) in zip(names, seen, strict=True):
            bundle = TrustBundle.from_pem(bundle_pem.encode())
            assert bundle.digests == (new,), n
            assert _issuer(cert_pem, bundle) == new, n
        await rig.mtls("tls-cli")  # both sides on the new root only
        await rig.mtls("np-ok")
        assert await rig.dropped("np-no")  # the policy still holds

        # the old root is refused: tls-cli's old SVID by tls-srv, the old admin certificate
        # by the HTTPS API, the old node certificate by the agent port
        put = f"printf '%s' '{old_cert}' >/tmp/old.pem; printf '%s' '{old_key}' >/tmp/old.key"
        rc, out = await rig.run_in("tls-cli", ["sh", "-c", put])
        assert rc == 0, out
        await rig.refused("tls-cli", cert="/tmp/old.pem", key="/tmp/old.key")
        old = ClientConfig(c.api.config.servers, c.api.config.ca_file, old_admin.cert_file,
                           old_admin.key_file)  # fmt: skip
        with pytest.raises(CloudlessError, match="no coordinator answered"):
            await asyncio.to_thread(Client(old, timeout=5).nodes)
        creds = grpc.ssl_channel_credentials(
            root_certificates=c.api.config.ca_file.read_bytes(),
            private_key=old_node_creds[0],
            certificate_chain=old_node_creds[1],
        )
        coord_ip = next(iter(c.coord_hosts.values())).ip
        async with grpc.aio.secure_channel(
            f"{coord_ip}:{AGENT_PORT}", creds, options=channel_options()
        ) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as rpc:
                await pbg.AgentControlStub(ch).Renew(pb.RenewRequest(csr_pem=b""), timeout=5)
        assert rpc.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)

        # a token made before the switch is refused; a new node enrolls from the new root
        url = c.api_url(next(iter(c.coord_hosts)))
        facts = pb.NodeFacts()
        with pytest.raises(CloudlessError):
            await enroll(url, early_token, node_name="early", facts=facts, attempts=1)
        token = await asyncio.to_thread(c.api.create_token)
        late = await enroll(url, token, node_name="late", facts=facts, attempts=3)
        assert trust_report(late.cert_pem, late.ca_pem) == ([new], new)
        t = lap("checks after the rotation", t)

        # -- 4. a planned departure (cloudless agent leave) keeps a replica running ----------
        for n in names:  # pinned to their zones: they could not move off a leaving node
            c.api.call("DELETE", f"/v1/workloads/{n}")
        c.api.apply(WEB.format(image=image).encode())
        await wait_until("web ready", lambda: len(ready_web(c)) == 1, 90)
        [old_web] = ready_web(c)
        i = c.node_ids.index(old_web["node_id"])
        leaving = c.agents[i]
        assert leaving is not None
        samples: list[tuple[float, int, int]] = []  # (time, ready replicas, running tasks)
        done = threading.Event()

        def sample_web() -> None:
            while not done.is_set():
                n_ready = len(ready_web(c))
                tasks = sum(v for k, v in c.running_containers().items() if k.startswith("web-"))
                samples.append((time.monotonic(), n_ready, tasks))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample_web)
        sampler.start()
        try:
            t_leave = time.monotonic()
            left = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "cloudless", "agent", "leave",
                 "--data-dir", str(c.agent_dir(i)), "--deadline", "90s", "--reason", "netns test"],
                capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            took["agent leave"] = time.monotonic() - t_leave
            assert left.returncode == 0, left.stdout + left.stderr
            leaving.reap()
            await wait_until("departed", lambda: c.node_state(i) == "departed", 20)
            await asyncio.sleep(0.5)
        finally:
            done.set()
            await asyncio.to_thread(sampler.join)
        log = leaving.log.read_text(errors="replace")
        assert "left the cluster" in log and "Traceback" not in log
        assert leaving.popen.returncode == 0
        assert samples and min(s[1] for s in samples) >= 1, samples  # never without ready
        assert min(s[2] for s in samples) >= 1, samples  # never without a running container
        [new_web] = ready_web(c)
        assert new_web["node_id"] == c.node_ids[1 - i]
        assert c.tasks(1 - i).get(new_web["id"]) == "RUNNING"
        assert c.tasks(i).get(old_web["id"]) != "RUNNING"  # the old one was stopped
        lap("departure", t)

        print(
            f"\n[sec-netns] {', '.join(f'{k} {v:.1f}s' for k, v in took.items())}; "
            f"{len(states)} node samples during the rotation, all ready; {len(samples)} samples "
            f"during the leave, min ready {min(x[1] for x in samples)}, min running tasks "
            f"{min(x[2] for x in samples)}; "
            f"whole test (before teardown) {time.monotonic() - t0:.1f}s"
        )


async def wait_until_async(what: str, probe: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        assert time.monotonic() < deadline, f"not {what} within {timeout:.0f} s"


def _copy_config(src: Path, dst: Path) -> ClientConfig:
    """A copy of a client config (key, certificate, bundle) as it is now."""
    dst.mkdir(mode=0o700)
    for f in src.parent.iterdir():
        shutil.copy2(f, dst / f.name)
    return ClientConfig.load(dst / src.name)
