"""The agent-side renewal loop: keep a principal's certificate fresh, forever.

``Renewer.run`` plans each certificate's renewal once (``rotation.renewal_due`` with the
injected RNG, so the jitter does not flicker between checks), sleeps on the injected clock
until then, makes a **new key** and CSR, calls the injected ``renew`` (the agent's RPC to the
coordinator, made over mTLS with the current certificate) and stores the result with
``Credentials.save``. A failed call is retried with ``Backoff``; a certificate that expires
before renewal succeeds ends the loop with ``CertificateExpired``: the device must re-enrol
with a join token. ``renew`` returns the new certificate and the trust bundle, so a root
rotation reaches devices through ordinary renewals.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography import x509

from cloudless.lib.backoff import Backoff
from cloudless.lib.clock import Clock
from cloudless.security.credentials import Credentials
from cloudless.security.errors import CertificateExpired, IdentityMismatch, SecurityError
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import DEFAULT_KEY_TYPE, KeyType, load_private_key, make_csr
from cloudless.security.keys import new_private_key as _new_key
from cloudless.security.rotation import DEFAULT_FRACTION, DEFAULT_JITTER, renewal_due

RenewCall = Callable[[bytes], Awaitable[tuple[bytes, bytes]]]  # csr -> (cert, bundle)


class Renewer:
    def __init__(
        self,
        directory: str | Path,
        renew: RenewCall,
        clock: Clock,
        rng: random.Random,
        *,
        fraction: float = DEFAULT_FRACTION,
        jitter: float = DEFAULT_JITTER,
        backoff: Backoff | None = None,
        key_type: KeyType = DEFAULT_KEY_TYPE,
        on_renewed: Callable[[Credentials], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self._renew = renew
        self.clock = clock
        self.rng = rng
        self.fraction = fraction
        self.jitter = jitter
        self.backoff = backoff or Backoff(base=5.0, factor=2.0, cap=600.0)
        self.key_type = key_type
        self.on_renewed = on_renewed
        self.renewals = 0
        self.failures = 0

    async def run(self) -> None:
        while True:
            creds = Credentials.load(self.directory)
            plan = renewal_due(
                creds.cert_pem,
                self.clock.now(),
                self.rng,
                fraction=self.fraction,
                jitter=self.jitter,
            )
            if plan.expired:
                raise CertificateExpired(f"{creds.spiffe_id}: {plan.reason}")
            if plan.renew_at > self.clock.now():
                await self.clock.sleep(plan.renew_at - self.clock.now())
            await self._renew_until_done(creds, plan.expires_at)

    async def _renew_until_done(self, creds: Credentials, expires_at: float) -> None:
        attempt = 0
        while True:
            try:
                self._store(creds, *await self._attempt(creds))
                return
            except Exception:  # any failure of the call: retry until the cert expires
                self.failures += 1
                delay = self.backoff.delay(attempt, self.rng)
                attempt += 1
                if self.clock.now() + delay >= expires_at:
                    raise CertificateExpired(
                        f"{creds.spiffe_id}: could not renew before expiry after {attempt} "
                        "attempts; re-enrol with a join token"
                    ) from None
                await self.clock.sleep(delay)

    async def _attempt(self, creds: Credentials) -> tuple[bytes, bytes, bytes]:
        key = _new_key(self.key_type)
        cert, bundle = await self._renew(make_csr(key, creds.spiffe_id))
        return key, cert, bundle

    def _store(self, old: Credentials, key: bytes, cert: bytes, bundle: bytes) -> None:
        c = x509.load_pem_x509_certificate(cert)
        if c.public_key() != load_private_key(key).public_key():
            raise SecurityError("renewed certificate does not certify the new key")
        if SpiffeId.from_certificate(c) != old.spiffe_id:
            raise IdentityMismatch(f"renewed certificate is not for {old.spiffe_id}")
        new = Credentials(key, cert, bundle)
        new.save(self.directory)
        self.renewals += 1
        if self.on_renewed is not None:
            self.on_renewed(new)
