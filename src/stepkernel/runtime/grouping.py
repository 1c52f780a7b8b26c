"""Group commit: the step bodies a worker thread runs back to back, committed together.

A worker thread handles its leased batch in order.  Run messages are the common case,
and the children of one fan-out are usually leased together: committed one by one,
each child's commit also rewrites its parent's record (the step that settles), so a
fan-out of 20 costs 20 commits that each write the parent.  A :class:`RunGroup` instead
runs the bodies one after the other (user code, outside any transaction, as always),
holds their outcomes, and commits them in one
:class:`~stepkernel.domain.events.StepBodiesRan`: one transaction, the parent written
once, every message acknowledged in it.

What a group changes, and what it does not:

- *Semantics*: none.  The kernel applies the outcomes in order, each seeing the ones
  before it, exactly as separate commits in that order would.
- *Latency*: an outcome waits for the group's commit.  The group is committed when it
  holds ``limit`` outcomes, when its oldest outcome is ``window`` seconds old (checked
  after each body), before any message that is not a run message, and at the end of
  the batch: so a result waits at most ``window`` plus the duration of the body run
  after it.
- *Failure*: a crash before the commit loses the group's outcomes, as it would lose
  one; the messages' leases run out and the bodies run again (at-least-once, as
  always).  While it is held, each message stays covered by the worker's heartbeat.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stepkernel.domain.view import Decision
from stepkernel.ports.store import Delivery
from stepkernel.runtime.engine import Engine, RanBody
from stepkernel.runtime.prefetch import BatchRecords

__all__ = ["DEFAULT_GROUP", "DEFAULT_WINDOW", "RunGroup"]

DEFAULT_GROUP = 32
"""Most step outcomes committed together (``Worker(group=...)``; 1 turns grouping off)."""

DEFAULT_WINDOW = 0.02
"""Seconds the oldest held outcome may wait for more before the group is committed."""


class RunGroup:
    """Outcomes of step bodies run by one worker thread, not committed yet (see module).

    Not shared between threads.  ``add`` runs a body and may commit; ``flush`` commits
    what is held.  Errors from the store propagate from either; after one, what was held
    is dropped (its messages are delivered again when their leases run out).
    """

    def __init__(
        self,
        engine: Engine,
        known: BatchRecords | None = None,
        *,
        limit: int = DEFAULT_GROUP,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        on_flush: Callable[[list[Delivery]], None] | None = None,
    ) -> None:
        if limit < 1 or window < 0:
            raise ValueError("a group holds at least 1 outcome, for a window >= 0 s")
        self.engine = engine
        self.known = known
        self.limit = limit
        self.window = window
        self.clock = clock
        self.on_flush = on_flush
        self._held: list[RanBody] = []
        self._since = 0.0
        self.commits = 0

    @property
    def deliveries(self) -> list[Delivery]:
        """The messages whose outcomes are held."""
        return [item.delivery for item in self._held]

    @property
    def message_ids(self) -> list[str]:
        """The ids of the messages whose outcomes are held."""
        return [item.delivery.message.id for item in self._held]

    def __len__(self) -> int:
        return len(self._held)

    def add(self, delivery: Delivery) -> None:
        """Run the step body *delivery* asks for and hold its outcome; commit the group
        when it is full or old enough.  A message for an action already in the group
        first commits the group (one outcome per action and commit)."""
        action_id = delivery.message.action_id
        if any(item.delivery.message.action_id == action_id for item in self._held):
            self.flush()
        ran = self.engine.run_step_body(delivery, self.known)
        if ran is not None:
            if not self._held:
                self._since = self.clock()
            self._held.append(ran)
        if len(self._held) >= self.limit or (
            self._held and self.clock() - self._since >= self.window
        ):
            self.flush()

    def flush(self) -> Decision | None:
        """Commit every held outcome in one commit (none held: nothing to do); then,
        committed or not, tell ``on_flush`` which messages the group let go of."""
        held, self._held = self._held, []
        if not held:
            return None
        self.commits += 1
        try:
            return self.engine.commit_bodies(held, self.known)
        finally:
            if self.on_flush is not None:
                self.on_flush([item.delivery for item in held])
