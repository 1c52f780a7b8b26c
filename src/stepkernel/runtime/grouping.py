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
  holds ``limit`` outcomes, when its oldest outcome is ``window`` seconds old, before
  any message that is not a run message, and at the end of the batch.  The age is
  checked after each body and, by :meth:`RunGroup.flush_stale` (which ``Worker`` calls
  from a thread of its own every ``window / 2``), while the next body runs: a slow body
  does not hold back the outcomes before it.
- *Failure*: a crash (``KeyboardInterrupt``/``SystemExit`` from user code, a killed
  process) before the commit loses the group's outcomes, as it would lose one; the
  messages' leases run out and the bodies run again (at-least-once, as always).  While
  held, each message stays covered by the worker's heartbeat.  A group that cannot
  commit together (a conflict that never ends, a record that does not decode, a
  kernel error) is committed one outcome at a time, so one bad outcome does not sink
  its siblings; what still fails is reported to ``on_flush`` (the worker logs it and
  releases those messages, to be delivered again at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from stepkernel.domain.errors import StoreUnavailableError
from stepkernel.domain.view import Decision
from stepkernel.ports.store import Delivery
from stepkernel.runtime.engine import Engine, RanBody
from stepkernel.runtime.prefetch import BatchRecords

__all__ = ["DEFAULT_GROUP", "DEFAULT_WINDOW", "Failed", "OnFlush", "RunGroup"]

log = logging.getLogger("stepkernel.worker")

DEFAULT_GROUP = 32
"""Most step outcomes committed together (``Worker(group=...)``; 1 turns grouping off)."""

DEFAULT_WINDOW = 0.02
"""Seconds the oldest held outcome may wait for more before the group is committed."""

Failed = list[tuple[Delivery, Exception]]
"""Messages whose outcomes could not be committed, each with the error."""

OnFlush = Callable[[list[Delivery], Failed], None]
"""Told, after each commit of a group, which messages it let go of: committed (or found
stale), and failed."""


class RunGroup:
    """Outcomes of step bodies run by one worker thread, not committed yet (see module).

    ``add`` and ``flush`` belong to the thread that runs the bodies; ``flush_stale`` may
    be called from any other thread.  Commits are serialised (one at a time per group):
    ``flush`` waits for a ``flush_stale`` under way, and ``flush_stale`` skips while
    ``flush`` commits.  ``flush_stale`` commits without the batch's records (only their
    own thread may touch them) and leaves what it committed for that thread to take in
    at its next ``add`` or ``flush``.  An outcome counts as held (``deliveries``,
    ``len``) until its commit has ended.  Neither method raises for a failed commit:
    failures go to ``on_flush`` and the log.  A ``BaseException`` (a crash) propagates
    and drops what the crashed thread holds (unless ``flush_stale`` took it first).
    """

    def __init__(
        self,
        engine: Engine,
        known: BatchRecords | None = None,
        *,
        limit: int = DEFAULT_GROUP,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        on_flush: OnFlush | None = None,
    ) -> None:
        if limit < 1 or not window >= 0:
            raise ValueError("a group holds at least 1 outcome, for a window >= 0 s")
        self.engine = engine
        self.known = known
        self.limit = limit
        self.window = window
        self.clock = clock
        self.on_flush = on_flush
        self._lock = threading.Lock()  # guards the lists below; never held while committing
        self._committer = threading.Lock()  # held for the whole of a commit
        self._held: list[RanBody] = []
        self._committing: list[RanBody] = []
        self._actions: set[str] = set()  # of the outcomes held or being committed
        self._unseen: list[Decision] = []  # committed by flush_stale, not yet in known
        self._since = 0.0
        self.commits = 0
        """Groups committed (a group committed one outcome at a time counts once)."""

    @property
    def deliveries(self) -> list[Delivery]:
        """The messages whose outcomes are held or being committed."""
        with self._lock:
            return [item.delivery for item in (*self._committing, *self._held)]

    @property
    def message_ids(self) -> list[str]:
        """The ids of the messages whose outcomes are held or being committed."""
        return [d.message.id for d in self.deliveries]

    def __len__(self) -> int:
        with self._lock:
            return len(self._committing) + len(self._held)

    def add(self, delivery: Delivery) -> bool:
        """Run the step body *delivery* asks for and hold its outcome (True); commit the
        group when it is full or old enough.  False when the message no longer applied
        (it is acknowledged, nothing held).  A message for an action whose outcome is
        held or being committed first waits for that commit (one outcome per action and
        commit).  Errors of the store while loading propagate (nothing is held for
        *delivery*)."""
        action_id = delivery.message.action_id
        if action_id in self._actions:
            self.flush()
        self._catch_up()
        ran = self.engine.run_step_body(delivery, self.known)
        with self._lock:
            if ran is not None:
                if not self._held:
                    self._since = self.clock()
                self._held.append(ran)
                self._actions.add(action_id)
            due = len(self._held) >= self.limit or (
                bool(self._held) and self.clock() - self._since >= self.window
            )
        if due:
            self.flush()
        return ran is not None

    def flush(self) -> None:
        """Commit every held outcome, together (see module); nothing held: nothing to do.
        Waits for a commit of ``flush_stale`` under way."""
        with self._committer:
            self._catch_up()
            with self._lock:
                held, self._held = self._held, []
                self._committing = held
            self._commit(held, self.known)

    def flush_stale(self) -> None:
        """From another thread: commit what is held if its oldest outcome is ``window``
        seconds old (the thread that holds it may be inside a slow step body); skip if
        a commit is under way."""
        if not self._committer.acquire(blocking=False):
            return
        try:
            with self._lock:
                if not self._held or self.clock() - self._since < self.window:
                    return
                held, self._held = self._held, []
                self._committing = held
            decisions = self._commit(held, None)
            with self._lock:
                self._unseen.extend(decisions)
        finally:
            self._committer.release()

    def _catch_up(self) -> None:
        """Tell the batch's records what ``flush_stale`` committed meanwhile (in commit
        order: commits are serialised)."""
        with self._lock:
            unseen, self._unseen = self._unseen, []
        if self.known is not None:
            for decision in unseen:
                self.known.committed(decision)

    def _commit(self, held: list[RanBody], known: BatchRecords | None) -> list[Decision]:
        """Commit *held* (the caller holds the commit lock and put it in _committing);
        the decisions committed."""
        done: list[Delivery] = []
        failed: Failed = []
        decisions: list[Decision] = []
        try:
            if held:
                try:
                    decisions.append(self.engine.commit_bodies(held, known) or _NOTHING)
                    done = [item.delivery for item in held]
                except StoreUnavailableError as exc:
                    failed = [(item.delivery, exc) for item in held]
                except Exception as exc:  # a bad outcome must not sink its siblings
                    if len(held) == 1:
                        failed = [(held[0].delivery, exc)]
                    else:
                        log.warning(
                            "%d step outcomes could not commit together (%s: %s); one at a time",
                            *(len(held), type(exc).__name__, exc),
                        )
                        for item in held:
                            try:
                                decisions.append(
                                    self.engine.commit_bodies([item], known) or _NOTHING
                                )
                                done.append(item.delivery)
                            except Exception as alone:
                                failed.append((item.delivery, alone))
        finally:
            with self._lock:
                self._committing = []
                self._actions = {item.delivery.message.action_id for item in self._held}
        if not held:
            return decisions
        self.commits += 1
        for delivery, error in failed:
            level = logging.WARNING if isinstance(error, StoreUnavailableError) else logging.ERROR
            log.log(
                level,
                "message %s: its outcome was not committed (%s: %s); it will be redelivered",
                *(delivery.message.id, type(error).__name__, error),
            )
        if self.on_flush is not None:
            self.on_flush(done, failed)
        return decisions


_NOTHING = Decision(outcome="quarantined")
"""What a commit that quarantined its outcome instead (``commit_bodies`` gave ``None``)
leaves for the batch's records: nothing."""
