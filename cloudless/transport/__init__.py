"""The transport between agents and coordinators: one seam, two implementations.

``channel`` states the contract: an agent *dials* a coordinator and gets a ``Channel``
(ordered, duplex, bounded, closable from either side, with typed errors); the coordinator
*serves* each accepted channel with a ``SessionHandler`` that knows which node is at the other
end. ``grpc_channel`` implements it over the ``AgentControl.Connect`` stream with mutual TLS
(the product); ``memory`` implements it in one event loop (the simulator and tests), with
faults a test can inject: a cut link, a frozen peer, a vanished peer. Both pass the one
conformance suite in ``cloudless.testing.channel_checks``.

What travels over a channel (Hello, heartbeats, assignments, redirects...) is the business
of ``cloudless.agent.link`` and ``cloudless.coordinator.agentapi.sessions``; this package
never looks inside a message.
"""

from cloudless.transport.channel import (
    AgentEnd,
    Channel,
    ChannelBroken,
    ChannelClosed,
    ChannelError,
    CoordinatorEnd,
    Dialer,
    EndOfChannel,
    RefusalCode,
    Refused,
    SessionHandler,
)

__all__ = [
    "AgentEnd",
    "Channel",
    "ChannelBroken",
    "ChannelClosed",
    "ChannelError",
    "CoordinatorEnd",
    "Dialer",
    "EndOfChannel",
    "RefusalCode",
    "Refused",
    "SessionHandler",
]
