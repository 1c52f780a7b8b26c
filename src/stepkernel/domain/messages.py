"""Messages: the wake-ups the kernel asks the store to deliver (possibly delayed).

Message ids are deterministic, so a replayed decision enqueues the same ids and stores
ignore an id they already hold.  Kinds:

``run``      run the body of ``step`` (attempt ``attempt``) of ``action_id``
``settle``   tell step ``step`` of ``action_id`` that dependency ``dep`` settled
             (``ok`` = successful, ``status`` = what it ended as); a wait is a delayed settle
``timeout``  check ``action_id``'s deadline
``cancel``   cancel ``action_id`` (its tree is being cut by parent ``dep``)
``after``    run the after callbacks of ``action_id``
"""

from __future__ import annotations

from enum import StrEnum

from attrs import frozen


class MessageKind(StrEnum):
    RUN = "run"
    SETTLE = "settle"
    TIMEOUT = "timeout"
    CANCEL = "cancel"
    AFTER = "after"


@frozen(
    slots=False
)  # dict-backed: attrs then builds it by writing the instance dict, faster than slots
class Message:
    """One queued wake-up; ``available_at`` is a store-clock timestamp."""

    id: str
    kind: MessageKind
    action_id: str
    step: int = -1
    attempt: int = 0
    dep: str = ""
    ok: bool = True
    status: str = ""
    available_at: float = 0.0
    preload: tuple[tuple[str, str], ...] = ()
    """Record keys the handler will probably need besides ``action_id`` (a hint: the
    runtime loads them with the action, saving a round trip; never required)."""

    @classmethod
    def run(
        cls,
        action_id: str,
        step: int,
        attempt: int,
        at: float,
        *,
        preload: tuple[tuple[str, str], ...] = (),
    ) -> Message:
        # Positionally, in field order: the most built message, and kwargs cost.
        return cls(
            f"run:{action_id}:{step}:{attempt}",
            MessageKind.RUN,
            action_id,
            step,
            attempt,
            "",
            True,
            "",
            at,
            preload,
        )

    @classmethod
    def settle(
        cls, action_id: str, step: int, dep: str, *, ok: bool, status: str, at: float
    ) -> Message:
        return cls(
            id=f"settle:{dep}",
            kind=MessageKind.SETTLE,
            action_id=action_id,
            step=step,
            dep=dep,
            ok=ok,
            status=status,
            available_at=at,
        )

    @classmethod
    def timeout(cls, action_id: str, at: float) -> Message:
        return cls(
            id=f"timeout:{action_id}:{at!r}",
            kind=MessageKind.TIMEOUT,
            action_id=action_id,
            available_at=at,
        )

    @classmethod
    def cancel(
        cls, action_id: str, reason: str, at: float, *, parent: str = "", own: bool = True
    ) -> Message:
        """Cut *action_id* because *parent* (a step waiting on it) ended: an action the
        parent created (*own*) is cancelled unless other steps wait on it too; otherwise
        only *parent* lets go of it."""
        return cls(
            id=f"cancel:{action_id}" + ("" if own else f":{parent}"),
            kind=MessageKind.CANCEL,
            action_id=action_id,
            dep=parent,
            ok=own,
            status=reason,
            available_at=at,
        )

    @classmethod
    def after(cls, action_id: str, at: float) -> Message:
        return cls(
            id=f"after:{action_id}", kind=MessageKind.AFTER, action_id=action_id, available_at=at
        )


def wait_message(action_id: str, step: int, dep: str, at: float) -> Message:
    """The timer of a timed wait: a settle of *dep* delivered at *at*."""
    return Message.settle(action_id, step, dep, ok=True, status="waited", at=at)
