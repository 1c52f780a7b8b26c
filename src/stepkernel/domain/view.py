"""The view a decision reads, and the decision it returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

from stepkernel.domain.messages import Message
from stepkernel.domain.records import Record, RecordKey, Tombstone
from stepkernel.domain.status import ActionStatus


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value)


@frozen
class View:
    """Records loaded for one decision: ``records[key]`` is the record, or ``None`` when
    the store holds nothing at ``key``.  A key that is not in ``records`` at all was not
    loaded: the kernel raises :class:`MissingRecordsError` naming it and the runtime loads
    it and decides again (decisions are pure, so this is cheap and safe)."""

    records: Mapping[RecordKey, Record | None] = field(factory=dict)


@frozen(
    slots=False
)  # dict-backed: attrs then builds it by writing the instance dict, faster than slots
class Decision:
    """What one event changes: new record versions, deletions and messages to commit
    atomically, plus the versions of records read but not written (``guards``, 0 for
    absent) that must not have moved.

    ``result_id``/``result_status`` answer the command (the action a submission
    created, joined or found; ``None`` id when it was satisfied without records).
    ``outcome`` is a short word for what happened (``created``, ``joined``, ``achieved``,
    ``exists``, ``applied``, ``stale``, ``duplicate``...).
    """

    writes: tuple[Record, ...] = ()
    deletes: tuple[Tombstone, ...] = ()
    messages: tuple[Message, ...] = ()
    guards: Mapping[RecordKey, int] = field(factory=dict)
    outcome: str = "applied"
    result_id: str | None = None
    result_status: ActionStatus | None = None
    finished: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when nothing is written, deleted or sent (a stale or duplicate event)."""
        return not (self.writes or self.deletes or self.messages)
