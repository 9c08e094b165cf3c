"""A child process answering ``HTTP/1.0 200`` on ports base..base+n-1 (the probed replicas'
host ports), so the agent's probes cross real sockets without this process's CPU being counted
as the agent's. Prints the number of requests served when its stdin closes."""

from __future__ import annotations

import asyncio
import sys


async def main(base: int, n: int) -> None:
    served = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(answer, "127.0.0.1", base + i) for i in range(n)]
    print("listening", flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        print(served, flush=True)
    for s in servers:
        s.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
