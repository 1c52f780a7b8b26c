"""Canonical JSON and the checksums computed from it.

The domain owns this encoding: compact JSON (separators ``,`` and ``:``), keys sorted,
non-ASCII left unescaped, NaN and infinities refused.  ``1``, ``1.0`` and ``True`` encode
differently (``1``, ``1.0``, ``true``) and so checksum differently.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from stepkernel.domain.errors import ChecksumInputError, UnserializableArgumentsError

_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def canonical_json(value: Any) -> str:
    """Encode *value* canonically, or raise :class:`UnserializableArgumentsError`."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError) as exc:
        raise UnserializableArgumentsError(
            f"not canonical JSON: {exc}", value_type=type(value).__name__
        ) from None


def checksum(value: Any) -> str | None:
    """SHA-256 hex digest of ``canonical_json(value)``; ``None`` for ``None``.

    >>> checksum(25)
    'b7a56873cd771f2c446d369b649430b65a756ba278ff97ec81bb6f55b2e73569'
    >>> checksum(None) is None
    True
    """
    if value is None:
        return None
    try:
        text = _encoder.encode(value)
    except (TypeError, ValueError) as exc:
        raise ChecksumInputError(
            f"cannot checksum {type(value).__name__}: {exc}", value_type=type(value).__name__
        ) from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest(*parts: str) -> str:
    """Short chain digest (first 32 hex chars of SHA-256 over the joined parts)."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]
