"""Tiny TCP server and client run inside lab hosts by the tests (stdlib only)."""

from __future__ import annotations

import socket
import sys


def serve(greeting: str) -> None:
    """Listen on 0.0.0.0:<ephemeral>, print the port, answer every connection with greeting."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 0))
    s.listen(16)
    print(s.getsockname()[1], flush=True)
    while True:
        c, _ = s.accept()
        with c:
            c.sendall(greeting.encode())


def fetch(host: str, port: int, timeout: float) -> str:
    with socket.create_connection((host, port), timeout=timeout) as c:
        c.settimeout(timeout)
        return c.recv(100).decode()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        try:
            print(fetch(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
        except OSError as e:
            print(f"error: {e}")
            sys.exit(1)
