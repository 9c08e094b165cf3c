"""cloudless.security — who is who in a Cloudless cluster, and who may say so.

Owns the built-in CA, SPIFFE identities, join tokens, revocation and the mTLS edges. Pure
decisions (``verify``, ``authz``, ``rotation.renewal_due``, ``token_store.decide_mark``) are
kept apart from the few places that touch disk, threads or sockets (``ca`` state files,
bcrypt in ``tokens``, ``tls``).

=================  ==========================================================================
module             owns
=================  ==========================================================================
``identity``       ``SpiffeId`` (``spiffe://<td>/<kind>/<name>``), ``CertKind``
``keys``           leaf keys (ECDSA P-256 default) and CSRs, made by their owner
``ca``             ``CertificateAuthority``: RSA root, leaf issuance from CSRs, 0600 state
``bundle``         ``TrustBundle``: one or more trusted roots
``root_rotation``  begin (trust next root) -> switch (next issues) -> retire (drop old)
``verify``         pure leaf verification: root, validity, usage, SPIFFE ID, revocation
``revocation``     ``RevocationList`` by serial and by identity
``authz``          ``Authorizer`` -> ``Decision`` (allowed, reason, code)
``rotation``       ``renewal_due`` (pure) and ``renew_certificate`` (CA side)
``renewer``        ``Renewer.run``: the agent's renewal loop (new key each time, backoff)
``token_store``    ``TokenStore`` protocol, ``TokenRecord``, ``InMemoryTokenStore``
``tokens``         ``TokenManager`` (join tokens: JWT + bcrypt'd secret + CA digest pin)
``enrollment``     ``enroll``: the coordinator's token + CSR -> certificate path
``tls``            SSL contexts, gRPC credentials, peer identities, RPC authorization
``credentials``    a principal's own key/cert/bundle on disk (0600, pair checked)
``session``        ``RevocationGuard``: end open sessions on revocation or expiry
``errors``         typed ``SecurityError`` family
=================  ==========================================================================

See ``docs/security.md`` for the design and its reasons.
"""
