"""Which unfinished actions have something that will move them: a queued or leased
message, an outbound wait, a place in a lane whose holder will move, or open
dependencies that each have one (the ``no-stranded-action`` invariant, see
:meth:`stepkernel.testing.invariants.Invariants.at_quiescence`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from stepkernel.domain.messages import Message
from stepkernel.domain.records import ActionRecord, LaneRecord, Record, RecordKey
from stepkernel.domain.status import ActionStatus, StepStatus


class WakeupScan:
    """Which actions have something that will move them (see
    :meth:`Invariants.at_quiescence`), computed once over a whole state."""

    def __init__(self, records: Mapping[RecordKey, Record], queued: Iterable[Message]) -> None:
        self.actions = {r.id: r for r in records.values() if isinstance(r, ActionRecord)}
        self.by_action: defaultdict[str, list[Message]] = defaultdict(list)
        for message in queued:
            self.by_action[message.action_id].append(message)
        self.queued_in: dict[str, str] = {}
        for lane in records.values():
            if isinstance(lane, LaneRecord):
                for entry in lane.queue:
                    self.queued_in[entry.action_id] = lane.key
        self.performing: dict[str, ActionRecord] = {
            a.concurrency_key: a
            for a in self.actions.values()
            if a.status is ActionStatus.PERFORMING
        }
        self._memo: dict[str, bool] = {}

    def has_wakeup(self, record: ActionRecord) -> bool:
        memo = self._memo
        if record.id in memo:
            return memo[record.id]
        memo[record.id] = True  # cycles are the deadlock detector's business
        result = self._direct(record)
        memo[record.id] = result
        return result

    def _direct(self, record: ActionRecord) -> bool:
        messages = self.by_action.get(record.id, [])
        if record.status.terminal:
            return record.callbacks != "pending" or bool(messages)
        if messages:
            return True
        if record.status is ActionStatus.PENDING:
            lane = self.queued_in.get(record.id)
            holder = None if lane is None else self.performing.get(lane)
            return holder is not None and self.has_wakeup(holder)
        if record.awaiting_completion:
            return True
        step = record.current_step
        if step is None or step.status is not StepStatus.PERFORMING:
            return False
        links = dict(step.links)
        waits = {dep for dep, _at in step.wakes}
        for dep in step.open:
            if dep in waits:
                # A wait needs its timer: a settle message for that dependency.
                return False
            child = self.actions.get(links.get(dep, dep))
            while child is not None and child.superseded_by is not None:
                child = self.actions.get(child.superseded_by)
            if child is None or not self.has_wakeup(child):
                return False
        return bool(step.open)
