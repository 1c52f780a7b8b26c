"""Exhaustive small schedules: every order in which a small scenario can unfold.

Where :mod:`stepkernel.testing.simulation` *samples* schedules with seeds, this module
*enumerates* them: for a scenario small enough, every delivery order of its messages,
each message optionally delivered twice, every moment for each outside event and for
time to pass -- and it says so, or raises.

Theory of operation
-------------------
A *scenario* is a function that builds a fresh :class:`World` -- an :class:`App` on
``CheckedStore(InMemoryWorkflowStore(FakeClock))``, both subclassed to observe what
each delivery touches and to race duplicates (see below) -- submits its roots,
declares its *outside events* with :meth:`World.event` ("complete the outbound action
now", "complete an unknown id") and sets its final check, :attr:`World.check`.

A *schedule* is a sequence of choices.  At each point the choices are, in this order:

``deliver <id>``
    hand one due message (``available_at <= now``; by id, so the order is stable) to a
    worker, which handles it and commits its outcome.
``deliver twice <id>``
    the same, delivered a second time -- at most once per message id and schedule.  The
    copy goes to a second worker that leased the message too and handles it completely
    (loads the same state, runs the same user code, commits) at the moment the first
    worker is about to write its outcome; the first worker's write then meets the new
    state (a version conflict makes it decide again) and must change nothing more.
    This is the at-least-once race in its sharpest form: user code ran twice on the
    same state, its outcome must be applied once.
``event <name>``
    fire an outside event that has not fired yet.
``advance to t+<s>``
    move the :class:`FakeClock` to the earliest ``available_at`` still in the future.
    Offered whenever such a message is queued, whether or not others are due now (a
    worker may lag behind its timers); the only choice once nothing is due and every
    event has fired.

A schedule ends when nothing is queued and every event has fired.  Every commit is
checked as it happens (:class:`CheckedStore`); after every choice nothing in flight may
lack a wake-up (:meth:`Invariants.at_quiescence`, ``healed=False``); at the end the
state must be healed (``healed=True``: every action finished, nothing queued) and the
scenario's check must pass.

:func:`explore` is a stateless depth-first search: each schedule is re-executed from
scratch (a fresh world from the scenario), following the previous schedule up to its
deepest point with an untried alternative, then that alternative, then the first
choice everywhere after.  Nothing is copied or restored, so what is checked is exactly
what the engine does.  Scenarios must be deterministic (sequential ids, seeded
randomness, no wall clock): a replayed point that offers other choices raises
:class:`NondeterministicScenario`.

Reduction
---------
With ``reduce=True`` (the default) the search skips schedules that cannot reach
anything new, in two sound ways; ``reduce=False`` runs every schedule.

*Commuting deliveries* (sleep sets, Godefroid 1996).  Two deliveries that touch
disjoint state commute: in either order they make the same commits and end in the same
state.  After exploring choice ``t`` at a point, each later sibling is explored with
``t`` asleep -- not to be taken again -- for as long as the choices made since commute
with ``t``.  This keeps one schedule per class of equivalent interleavings and still
reaches every state and every final state (a commit skipped at one state is made, on
the very same records, at another).  A path on which every remaining choice is asleep
is dropped unfinished (:attr:`Exploration.redundant`).

Whether two deliveries commute is observed, not declared: while a delivery runs (its
duplicate and the invariant checker's reads included), the in-memory store records
the record keys it read and wrote, the message ids it enqueued, leased or acknowledged,
and any draw from the app's random generator (retry jitter).  Two deliveries commute
when neither wrote anything the other read or wrote.  Outside events and the passing
of time commute with nothing.

*Converged duplicates.*  When ``deliver twice <id>`` leaves exactly the state ``deliver
<id>`` left from the same point (every record's version and digest chain, the queue,
the clock), everything after it was already explored from that state, and the path
stops there (:attr:`Exploration.converged`); the duplicate's own commits were checked.
A duplicate that ends anywhere else is explored to the end like any other choice.

Both reductions see only the store.  State kept *outside* it by user code (a list a
step body appends to) is not observed: a check that depends on the order of such side
effects between unrelated actions, or on how often a body ran after a duplicate, needs
``reduce=False``.

Limits
------
*limit* bounds the executions (finished schedules plus paths stopped early):
:func:`explore` raises :class:`ScheduleLimitExceeded` rather than return after a
partial search, so a passing exploration is always exhaustive.  A failing schedule raises
:class:`ScheduleFailure` naming its choices; :func:`run_schedule` replays exactly those.
"""

from stepkernel.testing.schedules.execution import run_schedule
from stepkernel.testing.schedules.footprints import Place as Place
from stepkernel.testing.schedules.results import (
    Exploration,
    NondeterministicScenario,
    ScheduleFailure,
    ScheduleLimitExceeded,
)
from stepkernel.testing.schedules.search import explore
from stepkernel.testing.schedules.world import Check, OutsideEvent, Scenario, World

__all__ = [
    "Check",
    "Exploration",
    "NondeterministicScenario",
    "OutsideEvent",
    "Scenario",
    "ScheduleFailure",
    "ScheduleLimitExceeded",
    "World",
    "explore",
    "run_schedule",
]
