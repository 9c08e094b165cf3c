"""The probes themselves: one attempt each, always answered as ``(passed, detail)``.

* exec: the command runs inside the container through the runtime seam; exit 0 passes.
* http: ``GET <path>`` (HTTP/1.0, ``Connection: close``) to the replica's host port on this
  node; a 2xx or 3xx status passes.
* tcp: a connection to the replica's host port is accepted.

Containers share the node's network, so a declared port is reached at ``host:<host port>``
(the port the agent allocated for it). Every failure, timeout and error becomes a ``False``
with a short reason a user can act on; nothing here raises for a failed probe.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from cloudless.lib.errors import CloudlessError
from cloudless.lib.waits import within
from cloudless.model.health import Probe, ProbeKind
from cloudless.runtime.protocol import ContainerRuntime

MAX_STATUS_LINE = 1024
Result = tuple[bool, str]


@dataclass
class Prober:
    """Runs probes for one container. ``host_ports`` maps declared ports to host ports."""

    runtime: ContainerRuntime
    container_id: str
    host: str = "127.0.0.1"
    host_ports: dict[int, int] = field(default_factory=dict)

    async def __call__(self, probe: Probe) -> Result:
        try:
            match probe.kind:
                case ProbeKind.EXEC:
                    return await self._exec(probe)
                case ProbeKind.HTTP:
                    return await within(probe.timeout_s, self._http(probe))
                case ProbeKind.TCP:
                    return await within(probe.timeout_s, self._tcp(probe))
        except TimeoutError:
            return False, f"timed out after {probe.timeout_s:g}s"
        except ConnectionRefusedError:
            return False, "connection refused"
        except (OSError, CloudlessError) as e:
            return False, str(e) or type(e).__name__

    def _port(self, probe: Probe) -> int:
        return self.host_ports.get(probe.port, probe.port)

    async def _exec(self, probe: Probe) -> Result:
        r = await self.runtime.exec_in_container(
            self.container_id, probe.command, timeout=probe.timeout_s
        )
        if r.timed_out:
            return False, f"timed out after {probe.timeout_s:g}s"
        first = r.output.strip().splitlines()[0][:200] if r.output.strip() else ""
        detail = f"exit {r.exit_code}" + (f": {first}" if first else "")
        return r.exit_code == 0, detail

    async def _tcp(self, probe: Probe) -> Result:
        _, writer = await asyncio.open_connection(self.host, self._port(probe))
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, "connected"

    async def _http(self, probe: Probe) -> Result:
        port = self._port(probe)
        reader, writer = await asyncio.open_connection(self.host, port)
        try:
            writer.write(
                f"GET {probe.path} HTTP/1.0\r\nHost: {self.host}:{port}\r\n"
                "User-Agent: cloudless-probe\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        parts = line[:MAX_STATUS_LINE].decode("latin-1").split()
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return False, "not an HTTP response"
        status = int(parts[1])
        return 200 <= status < 400, f"HTTP {status}"
