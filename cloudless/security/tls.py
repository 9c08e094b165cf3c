"""mTLS helpers (placeholder: filled in below)."""

from cloudless.security.authz import Authorizer, Decision

__all__ = ["Authorizer", "Decision"]
