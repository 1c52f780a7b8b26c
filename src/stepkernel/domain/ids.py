"""Deterministic ids.

A child's id derives from its parent step and its ordinal in the fan-out, so a step body
that runs again produces the same ids and replays are idempotent.  Roots take a
caller-supplied idempotency key (hashed) or a fresh id chosen by the runtime.
"""

from __future__ import annotations

import hashlib


def child_id(parent_action_id: str, step: int, ordinal: int) -> str:
    """Id of the *ordinal*-th child fanned out by step *step* of *parent_action_id*."""
    return f"{parent_action_id}.{step}.{ordinal}"


def wait_id(parent_action_id: str, step: int, ordinal: int) -> str:
    """Dependency id of the *ordinal*-th wait of a step."""
    return f"{parent_action_id}.{step}.w{ordinal}"


def root_id_for_key(idempotency_key: str) -> str:
    """The root id an idempotency key always maps to."""
    return "k" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:31]


def is_descendant(candidate_id: str, ancestor_id: str) -> bool:
    """True when *candidate_id* was created (transitively) under *ancestor_id*."""
    return candidate_id.startswith(ancestor_id + ".")


def is_wait(dep_id: str) -> bool:
    """True when *dep_id* names a timed wait rather than an action."""
    return dep_id.rsplit(".", 1)[-1].startswith("w")
