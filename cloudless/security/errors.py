"""Typed, user-facing security errors.

Every refusal in ``cloudless.security`` raises a subclass of ``SecurityError`` (itself a
``CloudlessError``) whose message names what was wrong and how to fix it, and whose ``code``
is a stable slug that an RPC layer can forward as the deny reason.
"""

from __future__ import annotations

from cloudless.lib.errors import CloudlessError


class SecurityError(CloudlessError):
    code = "security_error"


# --- identities -------------------------------------------------------------------------------


class InvalidSpiffeId(SecurityError):
    code = "invalid_spiffe_id"


class IdentityMismatch(SecurityError):
    """A certificate or CSR names a different identity than the one claimed or required."""

    code = "identity_mismatch"


class TrustDomainMismatch(SecurityError):
    code = "trust_domain_mismatch"


# --- the CA and its state -------------------------------------------------------------------


class CaStateError(SecurityError):
    """The CA directory is missing, incomplete, unreadable or would be overwritten."""

    code = "ca_state"


class CaPassphraseError(CaStateError):
    code = "ca_passphrase"


class InvalidCsr(SecurityError):
    code = "invalid_csr"


class UnsupportedKey(SecurityError):
    code = "unsupported_key"


# --- certificates presented by peers ----------------------------------------------------------


class CertificateRejected(SecurityError):
    code = "certificate_rejected"


class MalformedCertificate(CertificateRejected):
    code = "malformed_certificate"


class UntrustedCertificate(CertificateRejected):
    """Not issued by any root in the trust bundle (e.g. another cluster's CA)."""

    code = "untrusted_certificate"


class CertificateExpired(CertificateRejected):
    code = "certificate_expired"


class CertificateNotYetValid(CertificateRejected):
    code = "certificate_not_yet_valid"


class CertificateRevoked(CertificateRejected):
    code = "certificate_revoked"


class WrongKeyUsage(CertificateRejected):
    code = "wrong_key_usage"


class WrongIdentityKind(CertificateRejected):
    code = "wrong_identity_kind"


class PermissionDenied(SecurityError):
    """An authorizer said no; ``reason_code`` is the code of the underlying refusal."""

    code = "permission_denied"

    def __init__(self, message: str, *, reason_code: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


# --- bootstrap tokens --------------------------------------------------------------------------


class TokenError(SecurityError):
    code = "token_error"


class TokenMalformed(TokenError):
    code = "token_malformed"


class TokenForeignCluster(TokenError):
    code = "token_foreign_cluster"


class TokenSignatureInvalid(TokenError):
    code = "token_signature_invalid"


class TokenExpired(TokenError):
    code = "token_expired"


class TokenSecretMismatch(TokenError):
    code = "token_secret_mismatch"


class TokenNotFound(TokenError):
    code = "token_not_found"


class TokenRevoked(TokenError):
    code = "token_revoked"


class TokenAlreadyUsed(TokenError):
    code = "token_already_used"


class TokenWrongUse(TokenError):
    code = "token_wrong_use"


class CaDigestMismatch(TokenError):
    """The CA a server presented is not the one the join token pins: do not talk to it."""

    code = "ca_digest_mismatch"
