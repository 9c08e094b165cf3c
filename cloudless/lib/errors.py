"""The root of Cloudless's typed, user-facing errors.

Every error a user can see subclasses ``CloudlessError`` and carries a message that names the
problem and, where there is one, the fix. ``code`` is a stable machine-readable slug.
"""

from __future__ import annotations


class CloudlessError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class ValidationError(CloudlessError):
    """Bad user input. ``problems`` lists every ``path: reason`` found, not just the first."""

    code = "invalid"

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class NotFound(CloudlessError):
    code = "not_found"


class Conflict(CloudlessError):
    code = "conflict"
