"""``python -m bench.network [--only dns,nft,swap,iperf]``

Measures the network figures of issue 14 that run on one machine: DNS responder throughput and
latency on loopback, the nft whole-table swap for 200 services x 3 endpoints, swaps while a
client keeps connecting to a VIP (misses), and TCP throughput between two namespaces
plain-routed vs over Nebula (direct), and endpoint convergence from the publisher to several
devices (whole messages vs the change alone). Writes ``bench/results/network.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from bench.common import RESULTS, write_results


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.network")
    ap.add_argument("--only", default="dns,nft,publisher,converge,swap,iperf")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    # sections not re-run keep their last figures (and say when they were measured)
    out: dict[str, Any] = {}
    prev = RESULTS / "network.json"
    if prev.exists():
        old = json.loads(prev.read_text())
        for k in (
            "dns",
            "nft_swap",
            "publisher_round",
            "converge",
            "swap_under_load",
            "throughput",
        ):
            if k in old:
                out[k] = {"measured": old.get("when"), **old[k]}
    if "dns" in parts:
        from bench.network.dns_load import measure as dns

        out["dns"] = {"measured": now(), "loadavg_before": os.getloadavg()[0], **dns()}
        print("dns", json.dumps(out["dns"]))
    if "nft" in parts:
        from bench.network.nft_swap import measure as nft

        out["nft_swap"] = {"measured": now(), "loadavg_before": os.getloadavg()[0], **nft()}
        print("nft", json.dumps(out["nft_swap"]))
    if "publisher" in parts:
        from bench.network.publisher_round import measure as publisher

        out["publisher_round"] = {
            "measured": now(),
            "loadavg_before": os.getloadavg()[0],
            **publisher(),
        }
        print("publisher", json.dumps(out["publisher_round"]))
    if "converge" in parts:
        from bench.network.converge import measure as converge

        out["converge"] = {"measured": now(), "loadavg_before": os.getloadavg()[0], **converge()}
        print("converge", json.dumps(out["converge"]))
    if "swap" in parts:
        from bench.network.swap_under_load import measure as swap

        out["swap_under_load"] = {
            "measured": now(),
            "loadavg_before": os.getloadavg()[0],
            **swap(),
        }
        print("swap", json.dumps(out["swap_under_load"]))
    if "iperf" in parts:
        from bench.network.throughput import measure as iperf

        out["throughput"] = {"measured": now(), "loadavg_before": os.getloadavg()[0], **iperf()}
        print("iperf", json.dumps(out["throughput"]))
    write_results("network", out)


if __name__ == "__main__":
    main()
