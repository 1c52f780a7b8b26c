"""The working set of one decision: reads from the view, accumulated writes, messages.

Internal to the kernel.  A record written several times in one decision is committed
once, as version ``read + 1``, sealed (lazily) with the event id -- in a group
(:class:`GroupTx`), with the id of the member event that wrote it last.
"""

from __future__ import annotations

from collections.abc import Iterable

from stepkernel.domain.encoding import seal_lazily
from stepkernel.domain.errors import MissingRecordsError
from stepkernel.domain.messages import Message
from stepkernel.domain.records import (
    ACHIEVEMENT,
    ACTION,
    LANE,
    AchievementRecord,
    ActionRecord,
    LaneRecord,
    Record,
    RecordKey,
    Tombstone,
    key_of,
)
from stepkernel.domain.status import ActionStatus
from stepkernel.domain.view import Decision, View


class Tx:
    """Reads through to the view, keeps the latest working copy of every record."""

    __slots__ = (
        "_base",
        "_changed",
        "_finished",
        "_messages",
        "_read",
        "_writers",
        "event_id",
        "now",
    )

    def __init__(self, view: View, event_id: str, now: float) -> None:
        self._base = view.records
        self._changed: dict[RecordKey, Record | None] = {}
        self._read: set[RecordKey] = set()
        self._messages: dict[str, Message] = {}
        self._finished: list[str] = []
        # Per record key, the event that wrote it last: only a group (GroupTx) keeps it.
        self._writers: dict[RecordKey, str] | None = None
        self.event_id = event_id
        self.now = now

    # -- reads ---------------------------------------------------------------------------

    def need(self, keys: Iterable[RecordKey]) -> None:
        """Raise :class:`MissingRecordsError` for every key the view did not load."""
        missing = tuple(k for k in keys if k not in self._changed and k not in self._base)
        if missing:
            raise MissingRecordsError(f"need {len(missing)} more record(s)", keys=missing)

    def get(self, key: RecordKey) -> Record | None:
        if key in self._changed:
            return self._changed[key]
        if key not in self._base:
            raise MissingRecordsError(f"need record {key[0]}:{key[1]}", keys=(key,))
        self._read.add(key)
        return self._base[key]

    def action(self, action_id: str) -> ActionRecord | None:
        key = (ACTION, action_id)  # get(), inlined: the hottest read
        changed = self._changed
        if key in changed:
            record = changed[key]
        else:
            if key not in self._base:
                raise MissingRecordsError(f"need record action:{action_id}", keys=(key,))
            self._read.add(key)
            record = self._base[key]
        assert record is None or isinstance(record, ActionRecord)
        return record

    def lane(self, key: str) -> LaneRecord:
        record = self.get((LANE, key))
        assert record is None or isinstance(record, LaneRecord)
        return record if record is not None else LaneRecord(key=key)

    def achievement(self, key: str) -> AchievementRecord | None:
        record = self.get((ACHIEVEMENT, key))
        assert record is None or isinstance(record, AchievementRecord)
        return record

    # -- writes --------------------------------------------------------------------------

    def put(self, record: Record) -> None:
        self._changed[key_of(record)] = record

    def put_lane(self, lane: LaneRecord) -> None:
        """Write *lane*, or delete it when it is empty (lanes are not kept idle)."""
        if lane.empty:
            self.delete((LANE, lane.key))
        else:
            self.put(lane)

    def delete(self, key: RecordKey) -> None:
        self._changed[key] = None

    def send(self, message: Message) -> None:
        self._messages[message.id] = message

    def mark_finished(self, action_id: str) -> None:
        self._finished.append(action_id)

    # -- result --------------------------------------------------------------------------

    def decision(
        self,
        outcome: str = "applied",
        result_id: str | None = None,
        result_status: ActionStatus | None = None,
    ) -> Decision:
        writers = self._writers
        writes: list[Record] = []
        deletes: list[Tombstone] = []
        base_records = self._base
        event_id = self.event_id
        for key, record in self._changed.items():
            base = base_records.get(key)
            if record is None:
                if base is not None:
                    deletes.append(Tombstone(key=key, version=base.version))
                continue
            if record is base:
                continue
            if writers is not None:
                event_id = writers[key]
            writes.append(seal_lazily(record, base=base, event_id=event_id))
        changed = self._changed
        guards = {}
        for key in self._read:
            if key not in changed:
                base = base_records[key]
                guards[key] = base.version if base is not None else 0
        # Positionally, in field order (writes, deletes, messages, guards, outcome,
        # result_id, result_status, finished): built for every event, and kwargs cost.
        return Decision(
            tuple(writes),
            tuple(deletes),
            tuple(self._messages.values()),
            guards,
            outcome,
            result_id,
            result_status,
            tuple(self._finished),
        )


class GroupTx(Tx):
    """The working set of a group of events decided together (see
    :class:`~stepkernel.domain.events.StepBodiesRan`).

    Members are applied one after the other (:meth:`begin` names the current one); each
    reads what the members before it wrote.  A member's handler ends, as for a lone
    event, by calling :meth:`decision`: here that only notes the member's outcome.
    :meth:`group_decision` then builds the one decision of the group, every record
    sealed with the id of the member that wrote it last.
    """

    __slots__ = ("_written_by", "outcomes", "view")

    def __init__(self, view: View, event_id: str, now: float) -> None:
        super().__init__(view, event_id, now)
        self.view = view
        self._written_by: dict[RecordKey, str] = {}
        self.outcomes: list[str] = []

    def begin(self, event_id: str) -> None:
        """The following writes belong to the member event *event_id*."""
        self.event_id = event_id

    def put(self, record: Record) -> None:
        key = key_of(record)
        self._changed[key] = record
        self._written_by[key] = self.event_id

    def decision(
        self,
        outcome: str = "applied",
        result_id: str | None = None,
        result_status: ActionStatus | None = None,
    ) -> Decision:
        """Note the current member's *outcome*; the group decides once, at the end."""
        self.outcomes.append(outcome)
        return _MEMBER_NOTED

    def group_decision(self, outcome: str) -> Decision:
        """The decision of the whole group."""
        self._writers = self._written_by
        return Tx.decision(self, outcome)


_MEMBER_NOTED = Decision(outcome="noted")
