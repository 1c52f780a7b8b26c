"""One seed's run of a simulation: the scheduler, the fault hooks the simulated store
calls, the step-body wrapper, healing and the final checks (see
:mod:`stepkernel.testing.simulation.simulator` for the model)."""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random
from collections import Counter
from typing import TYPE_CHECKING

from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.domain.errors import ConflictError, StepkernelError
from stepkernel.domain.events import StepBodyRaised, StepBodyRan
from stepkernel.domain.messages import MessageKind
from stepkernel.domain.records import (
    ACTION,
    AchievementRecord,
    ActionRecord,
    LaneRecord,
    Record,
)
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.store import Commit, Delivery
from stepkernel.runtime.app import App
from stepkernel.runtime.grouping import Failed, RunGroup
from stepkernel.runtime.prefetch import BatchRecords
from stepkernel.testing.faults import SimulatedCrash
from stepkernel.testing.invariants import CheckedStore, Invariants, Violation
from stepkernel.testing.simulation.clock import SimClock
from stepkernel.testing.simulation.completions import complete_some, complete_waiting
from stepkernel.testing.simulation.faults import Faults
from stepkernel.testing.simulation.ledger import BodyKey, Ledger, Outcome
from stepkernel.testing.simulation.model import (
    _CONTEXT,
    SimContext,
    SimulationResult,
    Workload,
)
from stepkernel.testing.simulation.store import SimStore
from stepkernel.testing.simulation.workers import SimWorker, run_key

if TYPE_CHECKING:
    from stepkernel.testing.simulation.simulator import Simulation


STRANDED_EVERY = 10
"""The whole-state checks (nothing stranded) run every this many scheduler steps, between
steps (no worker mid-call), and at the end of the safety phase."""

MAX_DEPTH = 3
"""How deeply stalled workers nest (a stall runs other workers, which may stall...)."""


class _Run:
    """One seed's simulation (see :class:`Simulation`)."""

    def __init__(self, sim: Simulation, seed: int, prefix: int | None) -> None:
        self.sim = sim
        self.seed = seed
        # Independent streams: cutting the safety phase never changes the workload.
        self.rng = random.Random(f"schedule:{seed}")
        # Whether a batch is handled as Worker does it (records prefetched, kept current
        # by the worker's own commits; see runtime.prefetch) or loaded message by
        # message: a stream of its own, so adding it changed no other trajectory.
        self.prefetching = random.Random(f"prefetch:{seed}")
        # Whether a batch's run messages are committed as groups, as Worker does (see
        # runtime.grouping), and how large: a stream of its own, likewise.
        self.grouping = random.Random(f"group:{seed}")
        setup = random.Random(f"setup:{seed}")
        workload = sim.workload
        self.workload = workload if isinstance(workload, Workload) else workload(setup)
        faults = sim.faults
        self.faults = faults if isinstance(faults, Faults) else faults(setup)
        self.steps = setup.randint(*sim.steps)
        if prefix is not None:
            self.steps = min(self.steps, prefix)
        self.clock = SimClock()
        if self.faults.clock_drift:
            self.clock.drift = setup.choice((-0.05, -0.01, 0.01, 0.05))
        self.inner = InMemoryWorkflowStore(clock=self.clock)
        self.invariants = Invariants()
        self.store = SimStore(CheckedStore(self.inner, self.invariants), self)
        ids = itertools.count(1)
        self.app = App(
            self.workload.registry,
            self.store,
            retry=sim.retry,
            handled=self.workload.handled,
            new_id=lambda: f"r{next(ids)}",
            rng=random.Random(f"jitter:{seed}"),
            lease_seconds=sim.lease_seconds,
        )
        self._run_body = self.app.engine.run_body
        self.app.engine.run_body = self._body  # type: ignore[method-assign]
        count = setup.randint(*sim.workers)
        self.workers = [
            SimWorker(i + 1, setup.choice((-20.0, -2.0, 2.0, 20.0)) if self.faults.skew else 0.0)
            for i in range(count)
        ]
        self.stack: list[SimWorker] = []
        self.healed = False
        self.ledger = Ledger()
        self.coverage: Counter[str] = Counter()
        self.trace = hashlib.sha256(f"{seed}".encode())
        self.pending_roots = list(self.workload.roots)
        self.submitted = 0
        self.extra: list[Violation] = []

    # -- hooks called by SimStore --------------------------------------------------------------

    def checkpoint(self, point: str) -> None:
        worker = self.stack[-1] if self.stack else None
        if worker is None or self.healed:
            return
        if self.rng.random() < self.faults.crash:
            self.coverage[f"crash:{point}"] += 1
            self.coverage["fault:crash"] += 1
            self._fault_in_flight()
            raise SimulatedCrash(point)
        if len(self.stack) < MAX_DEPTH and self.rng.random() < self.faults.delay:
            self.coverage["fault:delay"] += 1
            self._interleave(exclude=worker)

    def skew(self) -> float:
        if self.healed or not self.stack:
            return 0.0
        return self.stack[-1].skew

    def leased(self, deliveries: list[Delivery]) -> None:
        # Held from now on: a stall or hang before the worker handles them may let their
        # leases expire, and that counts against these attempts.
        if self.stack:
            self.stack[-1].holding = [k for k in map(run_key, deliveries) if k is not None]

    def batch(self, deliveries: list[Delivery]) -> list[Delivery]:
        if self.healed or not self.stack or not deliveries:
            return deliveries
        out: list[Delivery] = []
        for delivery in deliveries:
            key = run_key(delivery)
            if self.rng.random() < self.faults.drop:
                self.coverage["fault:drop"] += 1
                if key is not None:
                    self.ledger.fault(key)
                continue
            out.append(delivery)
            if self.rng.random() < self.faults.duplicate:
                self.coverage["fault:duplicate"] += 1
                if key is not None:
                    self.ledger.fault(key)
                out.append(delivery)
        if len(out) > 1 and self.rng.random() < self.faults.reorder:
            self.coverage["fault:reorder"] += 1
            self.rng.shuffle(out)
        return out

    def committed(self, commit: Commit) -> None:
        """Feed the trace hash and the coverage probes with an applied commit."""
        update = self.trace.update
        for record in commit.writes:
            update(f"{record.version}:{record.digest};".encode())
            self._probe(record)
        for tomb in commit.deletes:
            update(f"-{tomb.key[0]}:{tomb.key[1]};".encode())
        for message in commit.enqueue:
            update(f"+{message.id}@{message.available_at:.6f};".encode())

    def _probe(self, record: Record) -> None:
        if isinstance(record, ActionRecord):
            status = record.status
            if status.terminal:
                self.coverage[f"status:{status.value}"] += 1
            if status is ActionStatus.SUPERSEDED:
                self.coverage["lane:superseded"] += 1
            elif status is ActionStatus.DEADLOCKED:
                self.coverage["lane:deadlocked"] += 1
            step = record.current_step
            if step is not None and step.links:
                self.coverage["lane:joined"] += 1
        elif isinstance(record, LaneRecord):
            if record.queue:
                self.coverage["lane:queued"] += 1
        elif isinstance(record, AchievementRecord) and record.achieved:
            self.coverage["lane:achievement_granted"] += 1

    # -- step bodies ---------------------------------------------------------------------------

    def _body(self, record: ActionRecord) -> StepBodyRan | StepBodyRaised:
        step = record.current_step
        assert step is not None
        key: BodyKey = (record.id, step.index, step.attempt)
        invocation = self.ledger.body_started(key)
        differently = (
            invocation > 1
            and not self.healed
            and self.rng.random() < self.faults.retry_differently * 5
        )
        if differently:
            self.coverage["fault:retry_differently"] += 1
        worker = self.stack[-1] if self.stack else None
        if worker is not None:
            worker.running = key
        self.checkpoint("mid_body")
        if worker is not None and not self.healed and self.rng.random() < self.faults.hang:
            # The body hangs past its lease: time passes, other workers run meanwhile.
            self.coverage["fault:hang"] += 1
            self._fault_in_flight()
            self.clock.tick(self.sim.lease_seconds + 1.0)
            if len(self.stack) < MAX_DEPTH:
                self._interleave(exclude=worker)
        token = _CONTEXT.set(SimContext(self.seed, invocation, differently))
        try:
            event = self._run_body(record)
        finally:
            _CONTEXT.reset(token)
        if isinstance(event, StepBodyRan):
            outcome = Outcome(len(event.children), len(event.waits), event.failed is not None)
        else:
            outcome = Outcome(0, 0, True)
        self.ledger.body_returned(key, outcome)
        self.checkpoint("after_body")
        return event

    def _fault_in_flight(self) -> None:
        """A fault that may let a leased run message be delivered again: every attempt
        held by a worker that is running now may legitimately run once more."""
        for worker in self.stack:
            for key in worker.holding:
                self.ledger.fault(key)

    # -- the scheduler -------------------------------------------------------------------------

    def execute(self) -> SimulationResult:
        for index in range(self.steps):
            self._step()
            if index % STRANDED_EVERY == STRANDED_EVERY - 1:
                self._check_quiescence(healed=False)
        self._check_quiescence(healed=False)
        self._heal_and_drain()
        self._check_quiescence(healed=True)
        self._check_bodies()
        actions = self.actions()
        return SimulationResult(
            seed=self.seed,
            faults=self.faults.active,
            workers=len(self.workers),
            safety_steps=self.steps,
            transitions=self.invariants.transitions,
            violations=tuple(self.invariants.violations + self.extra),
            ledger=self.ledger.report(actions),
            coverage=self.coverage,
            trace_hash=self.trace.hexdigest(),
        )

    def _step(self) -> None:
        rng = self.rng
        self._restart_workers()
        choice = rng.random()
        if self.pending_roots and choice < 0.2:
            self._trace("submit")
            self._submit()
        elif choice < 0.75:
            alive = [w for w in self.workers if w.alive]
            if alive:
                worker = rng.choice(alive)
                self._trace(f"work {worker.name}")
                self._work(worker, limit=rng.randint(1, 3))
            else:
                self._trace("tick")
                self.clock.tick(rng.uniform(0.5, self.sim.lease_seconds))
        elif choice < 0.85:
            seconds = rng.choice((0.1, 1.0, 5.0, self.sim.lease_seconds / 2))
            self._trace(f"tick {seconds}")
            self.clock.tick(seconds)
        elif choice < 0.9:
            due = self.store.next_due()
            self._trace("due")
            if due is not None:
                self.clock.advance_to(due)
        elif choice < 0.95:
            self._trace("complete")
            complete_some(self)
        elif choice < 0.97:
            alive = [w for w in self.workers if w.alive]
            if alive:
                worker = rng.choice(alive)
                self._trace(f"recover {worker.name}")
                self._recover(worker)
        elif self.faults.clock_step:
            jump = rng.choice((-3600.0, 3600.0))
            self._trace(f"clock step {jump}")
            self.coverage["fault:clock_step"] += 1
            self.clock.step(jump)
        if self.faults.clock_drift:
            self.coverage["fault:clock_drift"] += 1
        if self.faults.skew and any(w.skew for w in self.workers):
            self.coverage["fault:skew"] += 1

    def _trace(self, what: str) -> None:
        self.trace.update(f"|{what}|".encode())

    def _restart_workers(self) -> None:
        for worker in self.workers:
            if not worker.alive and self.clock.true >= worker.restart_at:
                worker.alive = True
                worker.incarnation += 1

    def _interleave(self, *, exclude: SimWorker) -> None:
        """A stalled worker: others (not on the stack) run a little meanwhile."""
        others = [w for w in self.workers if w.alive and w is not exclude and w not in self.stack]
        for _ in range(self.rng.randint(1, 2)):
            if not others:
                return
            self._work(self.rng.choice(others), limit=self.rng.randint(1, 2))
            others = [w for w in others if w.alive]

    def _work(self, worker: SimWorker, *, limit: int) -> int:
        """*worker* leases up to *limit* messages and handles them; returns how many."""
        self.stack.append(worker)
        handled = 0
        group: RunGroup | None = None
        try:
            batch = self.store.lease(
                worker=worker.name, limit=limit, lease_seconds=self.sim.lease_seconds
            )
            worker.holding = [k for k in map(run_key, batch) if k is not None]
            known = None
            if batch and self.prefetching.random() < 0.5:
                # Served for up to a simulated second: stalls and other workers make
                # these records stale, which only conflicts may reveal.
                known = BatchRecords(self.store, max_age=1.0, clock=lambda: self.clock.true)
                known.prefetch(d.message for d in batch)
                self.coverage["prefetch:batch"] += 1
            if batch and self.grouping.random() < 0.5:
                # Never committed for age: by size, before another kind, at the end.
                group = RunGroup(
                    self.app.engine,
                    known,
                    limit=self.grouping.randint(2, 4),
                    window=math.inf,
                    clock=lambda: self.clock.true,
                    on_flush=functools.partial(self._let_go, worker),
                )
            for delivery in batch:
                worker.running = run_key(delivery)
                try:
                    saved = known.loads_saved if known is not None else 0
                    if group is not None and delivery.message.kind is MessageKind.RUN:
                        self._grouped(group, delivery)
                    else:
                        if group is not None:
                            group.flush()
                        self.app.engine.handle(delivery, known)
                    if known is not None and known.loads_saved > saved:
                        self.coverage["prefetch:load_saved"] += 1
                except ConflictError:
                    self.coverage["conflict_gave_up"] += 1
                except StepkernelError as exc:
                    self.extra.append(Violation("worker-error", f"{type(exc).__name__}: {exc}"))
                handled += 1
                running = worker.running
                if (
                    running is not None
                    and running in worker.holding
                    and (group is None or running not in map(run_key, group.deliveries))
                ):
                    worker.holding.remove(running)
                worker.running = None
            if group is not None:
                group.flush()
        except SimulatedCrash:
            if group is not None and len(group):
                self.coverage["group:crashed_holding"] += 1  # its outcomes are lost
            worker.alive = False
            worker.restart_at = self.clock.true + self.rng.uniform(1.0, self.sim.lease_seconds)
        finally:
            worker.running = None
            worker.holding = []
            self.stack.pop()
        return handled

    def _grouped(self, group: RunGroup, delivery: Delivery) -> None:
        """Run *delivery*'s body into *group*.  The attempts a group holds stay in the
        worker's hands (a crash before the group commits may let them run again)
        until it commits."""
        held = len(group)
        group.add(delivery)
        if len(group) > 1 and len(group) > held:
            self.coverage["group:held"] += 1

    def _let_go(self, worker: SimWorker, done: list[Delivery], failed: Failed) -> None:
        """A group committed *done* and could not commit *failed* (each with its error,
        judged as the loop judges a lone message's): no longer in the worker's hands."""
        if len(done) + len(failed) > 1:
            self.coverage["group:committed"] += 1
        for _delivery, exc in failed:
            if isinstance(exc, ConflictError):
                self.coverage["conflict_gave_up"] += 1
            elif isinstance(exc, StepkernelError):
                self.extra.append(Violation("worker-error", f"{type(exc).__name__}: {exc}"))
            else:
                raise exc  # a bug: fail the run loudly, as a lone message's would
        let_go = {run_key(d) for d in done} | {run_key(d) for d, _exc in failed}
        worker.holding = [k for k in worker.holding if k not in let_go]

    def _recover(self, worker: SimWorker) -> None:
        """*worker* runs the recovery sweep (as real workers do every few minutes)."""
        self.stack.append(worker)
        try:
            if self.app.recover():
                self.coverage["recovered"] += 1
        except SimulatedCrash:
            worker.alive = False
            worker.restart_at = self.clock.true + self.rng.uniform(1.0, self.sim.lease_seconds)
        finally:
            self.stack.pop()

    def _submit(self) -> None:
        root = self.pending_roots.pop(0)  # (after healing: no duplicate submissions)
        self.submitted += 1
        key = root.key or f"root-{self.submitted}"
        action = self.app.invoke_later(root.actor, root.name, *root.arguments, idempotency_key=key)
        self.ledger.submission(key, action.id)
        if action.outcome == "achieved":
            self.coverage["lane:achieved"] += 1
        if not self.healed and self.rng.random() < self.faults.duplicate:
            # The caller retries its submission (it never heard back): same key, same root.
            again = self.app.invoke_later(
                root.actor, root.name, *root.arguments, idempotency_key=key
            )
            self.ledger.submission(key, again.id)
            self.coverage["duplicate_submission"] += 1

    # -- healing and the final checks ------------------------------------------------------------

    def _heal_and_drain(self) -> None:
        self.healed = True
        self.clock.heal()
        for worker in self.workers:
            worker.alive = True
            worker.incarnation += 1
        while self.pending_roots:
            self._submit()
        budget = self.invariants.transitions + 200 + 60 * max(1, len(self.actions()))
        healthy = self.workers[0]
        while True:
            if self.invariants.transitions > budget:
                self.extra.append(
                    Violation(
                        "liveness",
                        f"not finished {budget} transitions after healing (livelock?)",
                    )
                )
                return
            if self._work(healthy, limit=20):
                continue
            if complete_waiting(self):
                continue
            due = self.store.next_due()
            if due is None:
                return
            self.clock.advance_to(due)

    def actions(self) -> dict[str, ActionRecord]:
        return {
            key[1]: record
            for key, record in self.inner.all_records().items()
            if key[0] == ACTION and isinstance(record, ActionRecord)
        }

    def _check_quiescence(self, *, healed: bool) -> None:
        self.invariants.at_quiescence(self.inner.all_records(), self.inner.queued(), healed=healed)

    def _check_bodies(self) -> None:
        self.extra.extend(self.ledger.check_bodies(self.actions()))
