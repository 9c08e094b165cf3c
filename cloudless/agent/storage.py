"""The agent's object-store node: ``StorageService`` (``cloudless.objectstore.service``) with
the agent's node identity for mutual TLS and the cluster store reached through the
coordinator's ``StoreProxy`` call (an agent has no etcd credentials).

``coordinator_send`` tries the coordinators the agent knows, the leader it last heard of
first, and raises ``Unavailable`` naming each one's failure when none answers; a refusal
(``PERMISSION_DENIED``) is a ``StoreError`` naming the rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from cloudless.agent.identity import AgentIdentity, channel_options
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.objectstore import store_proxy
from cloudless.objectstore.service import NodeTls
from cloudless.store.errors import StoreError, Unavailable

TIMEOUT_S = 15.0


def node_tls(ident: AgentIdentity) -> NodeTls:
    return NodeTls(ident.node_id, ident.trust_domain, ident.cert_pem, ident.key_pem, ident.ca_pem)


class CoordinatorSend:
    """``store_proxy.Send`` over gRPC, one channel per coordinator, kept open."""

    def __init__(self, ident: AgentIdentity, leader: Callable[[], str | None]) -> None:
        self.ident = ident
        self.leader = leader
        self.channels: dict[str, grpc.aio.Channel] = {}

    def _targets(self) -> list[str]:
        hint = self.leader()
        known = list(self.ident.coordinators)
        return [hint, *[k for k in known if k != hint]] if hint else known

    async def __call__(self, request: Any) -> Any:
        problems = []
        body = pb.StoreProxyRequest(request_json=store_proxy.encode(request))
        for target in self._targets():
            ch = self.channels.get(target)
            if ch is None:
                creds = self.ident.channel_credentials()
                ch = grpc.aio.secure_channel(target, creds, options=channel_options())
                self.channels[target] = ch
            try:
                resp = await pbg.AgentControlStub(ch).StoreProxy(body, timeout=TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                if e.code() in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ):
                    raise StoreError(f"coordinator {target}: {e.details()}") from None
                problems.append(f"{target}: {e.code().name} {e.details()}")
                continue
            return store_proxy.decode(resp.response_json)
        raise Unavailable("no coordinator answered the store proxy: " + "; ".join(problems))

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()
