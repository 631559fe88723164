"""The dashboard token: what every HTTP and WebSocket request to the dashboard must carry.

It is derived from the cluster secret (HMAC-SHA256 of a fixed label), so whoever holds the
secret (the cluster file, the secret file) can compute it, and it reveals nothing of the
secret. Requests carry it as ``?token=...`` or ``Authorization: Bearer ...``; it is compared
in constant time.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["TOKEN_LABEL", "dashboard_token", "token_matches"]

TOKEN_LABEL = b"actorgrid dashboard token v1"


def dashboard_token(secret: bytes) -> str:
    """The token for the dashboard of the cluster whose secret is ``secret`` (64 hex)."""
    return hmac.new(secret, TOKEN_LABEL, hashlib.sha256).hexdigest()


def token_matches(expected: str, given: str) -> bool:
    """Constant-time comparison (as bytes: a non-ASCII guess is just wrong, never an error)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
