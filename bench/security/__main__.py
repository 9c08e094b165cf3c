"""``python -m bench.security [--bcrypt-cost N] [--quick]`` -> bench/results/security.json.

Measures, side by side in one run on one machine:

* CSR signing throughput (certificates/s) with an RSA-4096 root (the default) and an RSA-2048
  root, and the one-off root generation time;
* join-token validation throughput: the cheap signed part alone (format, CA digest, HS256,
  claims) and the full check including bcrypt at the chosen cost;
* the enrolment critical path (token verify incl. bcrypt + CSR check + atomic mark-used + CSR
  signing) P50/P95 at the chosen bcrypt cost and at cost 12 for contrast;
* bcrypt cost vs. verify latency (4, 8, 10, 11, 12), the figures behind the default;
* per-RPC authorization cost (``Authorizer.authorize`` with a 1000-entry revocation list);
* leaf key generation per key type, the figures behind the ECDSA P-256 default.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt

from bench.common import percentile, write_results
from cloudless.lib.clock import SystemClock
from cloudless.lib.ids import SequentialIds
from cloudless.security.ca import CertificateAuthority, CertKind
from cloudless.security.enrollment import enroll
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import KeyType, generate_key, make_csr, new_private_key
from cloudless.security.revocation import RevocationList
from cloudless.security.tls import Authorizer
from cloudless.security.tokens import (
    DEFAULT_BCRYPT_COST,
    InMemoryTokenStore,
    TokenManager,
    TokenUse,
)


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _ms(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples, 50) * 1e3, 3),
        "p95_ms": round(percentile(samples, 95) * 1e3, 3),
        "mean_ms": round(statistics.fmean(samples) * 1e3, 3),
        "n": len(samples),
    }


def bench_signing(ca: CertificateAuthority, n: int) -> dict[str, Any]:
    csrs = []
    for i in range(n):
        sid = SpiffeId.node(f"n{i}")
        csrs.append((make_csr(new_private_key(), sid), sid))
    t = time.perf_counter()
    for csr, sid in csrs:
        ca.sign_csr(csr, sid, CertKind.NODE)
    dt = time.perf_counter() - t
    return {"certs_per_second": round(n / dt, 1), "ms_per_cert": round(dt / n * 1e3, 3), "n": n}


async def bench_tokens(
    ca: CertificateAuthority, cost: int, n_cheap: int, n_full: int
) -> dict[str, Any]:
    tm = TokenManager(
        ca, InMemoryTokenStore(), SystemClock(), bcrypt_cost=cost, ids=SequentialIds()
    )
    tokens = [(await tm.create(TokenUse.NODE_ENROLLMENT)).token for _ in range(max(4, n_full))]
    t = time.perf_counter()
    for i in range(n_cheap):
        tm.check_signed(tokens[i % len(tokens)], TokenUse.NODE_ENROLLMENT)
    cheap = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(n_full):
        await tm.verify(tokens[i], TokenUse.NODE_ENROLLMENT)
    full_seq = time.perf_counter() - t
    # two verifications at a time (bcrypt runs in worker threads and releases the GIL)
    t = time.perf_counter()
    for i in range(0, n_full - 1, 2):
        await asyncio.gather(
            tm.verify(tokens[i], TokenUse.NODE_ENROLLMENT),
            tm.verify(tokens[i + 1], TokenUse.NODE_ENROLLMENT),
        )
    full_par = time.perf_counter() - t
    return {
        "bcrypt_cost": cost,
        "signed_part_only_per_second": round(n_cheap / cheap, 1),
        "full_verify_per_second_sequential": round(n_full / full_seq, 2),
        "full_verify_per_second_2_concurrent": round((n_full // 2 * 2) / full_par, 2),
    }


async def bench_enrolment(ca: CertificateAuthority, costs: list[int], n: int) -> dict[str, Any]:
    """Enrolment critical path per bcrypt cost, requests interleaved across costs."""
    managers = {
        c: TokenManager(ca, InMemoryTokenStore(), SystemClock(), bcrypt_cost=c, ids=SequentialIds())
        for c in costs
    }
    reqs = []
    for i in range(n):
        for c, tm in managers.items():
            if c >= 12 and i % 3:  # fewer samples of the slowest cost
                continue
            token = (await tm.create(TokenUse.NODE_ENROLLMENT)).token
            node = f"e{c}-{i}"
            reqs.append((c, token, make_csr(new_private_key(), SpiffeId.node(node)), node))
    samples: dict[int, list[float]] = {c: [] for c in costs}
    for c, token, csr, node in reqs:
        t = time.perf_counter()
        await enroll(managers[c], ca, token=token, csr_pem=csr, node_id=node)
        samples[c].append(time.perf_counter() - t)
    return {f"cost_{c}": {"bcrypt_cost": c, **_ms(samples[c])} for c in costs}


def bench_bcrypt_costs(costs: list[int], rounds: int) -> list[dict[str, Any]]:
    """Round-robin over the costs (one check of each per round) so that load drift on a
    shared machine hits every cost alike and the ratios stay meaningful."""
    secret = b"0123456789abcdef0123456789abcdef"
    hashes = {c: bcrypt.hashpw(secret, bcrypt.gensalt(c)) for c in costs}
    samples: dict[int, list[float]] = {c: [] for c in costs}
    for r in range(rounds):
        for c in costs:
            if c >= 12 and r % 3:  # the slowest cost every third round only
                continue
            t = time.perf_counter()
            bcrypt.checkpw(secret, hashes[c])
            samples[c].append(time.perf_counter() - t)
    base = statistics.median(samples[costs[0]])
    return [
        {
            "cost": c,
            **_ms(samples[c]),
            "checks_per_second_one_core": round(1 / statistics.median(samples[c]), 1),
            f"ratio_to_cost_{costs[0]}": round(statistics.median(samples[c]) / base, 1),
        }
        for c in costs
    ]


def bench_authorize(ca: CertificateAuthority, n: int) -> dict[str, Any]:
    """Per-RPC authorization cost with a 1000-entry revocation list: cold (every call checks
    the root signature) and warm (the certificate was seen before; validity, trust domain and
    revocation are still checked)."""
    rl = RevocationList()
    for i in range(1000):
        rl.revoke_serial(10**30 + i, reason="bench", at=0.0)
    _, pem = ca.issue(SpiffeId.node("n1"), CertKind.NODE)
    claimed = SpiffeId.node("n1")
    out: dict[str, Any] = {}
    for label, size in (("cold", 0), ("warm", 4096)):
        authz = Authorizer(
            ca.trust_bundle, trust_domain=ca.trust_domain, revocations=rl, cache_size=size
        )
        t = time.perf_counter()
        for _ in range(n):
            d = authz.authorize(pem, expected_kind=CertKind.NODE, claimed=claimed)
        dt = time.perf_counter() - t
        assert d.allowed, d.reason
        out[label] = {"per_second": round(n / dt, 1), "us_each": round(dt / n * 1e6, 1)}
    return out


def bench_keygen(n: int) -> dict[str, Any]:
    out = {}
    for kt in (KeyType.EC_P256, KeyType.ED25519, KeyType.EC_P384, KeyType.RSA_2048):
        reps = max(3, n // 10) if kt is KeyType.RSA_2048 else n
        out[kt.value] = _ms(_timed(lambda kt=kt: generate_key(kt), reps))  # type: ignore[misc]
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.security")
    ap.add_argument("--bcrypt-cost", type=int, default=DEFAULT_BCRYPT_COST)
    ap.add_argument("--quick", action="store_true", help="smaller sample sizes")
    args = ap.parse_args()
    q = args.quick
    results: dict[str, Any] = {
        "bcrypt_cost": args.bcrypt_cost,
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        ca4096 = CertificateAuthority.init(Path(d) / "ca4096", root_key_size=4096)
        gen4096 = time.perf_counter() - t
        t = time.perf_counter()
        ca2048 = CertificateAuthority.init(Path(d) / "ca2048", root_key_size=2048)
        gen2048 = time.perf_counter() - t
        results["root_generation_s"] = {"rsa4096": round(gen4096, 3), "rsa2048": round(gen2048, 3)}
        n_sign = 100 if q else 400
        results["csr_signing"] = {
            "rsa4096_root": bench_signing(ca4096, n_sign),
            "rsa2048_root": bench_signing(ca2048, n_sign),
        }
        print("csr signing", results["csr_signing"], flush=True)
        results["authorize"] = {
            "rsa4096_root": bench_authorize(ca4096, 500 if q else 3000),
            "rsa2048_root": bench_authorize(ca2048, 500 if q else 3000),
        }
        print("authorize", results["authorize"], flush=True)
        results["token_validation"] = await bench_tokens(
            ca4096, args.bcrypt_cost, n_cheap=2000 if q else 10000, n_full=10 if q else 40
        )
        print("tokens", results["token_validation"], flush=True)
        costs = sorted({args.bcrypt_cost, 12})
        enrol = await bench_enrolment(ca4096, costs, 15 if q else 60)
        results["enrolment_critical_path"] = enrol
        print("enrolment", enrol, flush=True)
    results["bcrypt_cost_vs_latency"] = bench_bcrypt_costs([4, 8, 10, 11, 12], 9 if q else 30)
    print("bcrypt", results["bcrypt_cost_vs_latency"], flush=True)
    results["leaf_keygen"] = bench_keygen(50 if q else 200)
    print("keygen", results["leaf_keygen"], flush=True)
    results["notes"] = (
        "Single process on a shared 2-core machine; sequential unless stated. Enrolment path = "
        "TokenManager.verify (digest, HS256, expiry, store, bcrypt) + CA.check_csr + atomic "
        "mark-used + sign_csr with the RSA-4096 root; the client's key/CSR generation is not "
        "included (see leaf_keygen)."
    )
    results["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    write_results("security", results)


if __name__ == "__main__":
    asyncio.run(main())
