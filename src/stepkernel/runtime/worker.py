"""Workers: threads that lease messages, run user code and commit transitions.

Any number of workers, in one or many processes, can share a store: leases and
optimistic versions make racing safe.  ``stop()`` (and SIGTERM under
``run_forever``) lets each thread finish the message in hand and gives back the leases
it has not started, so nothing waits for a lease to expire.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from stepkernel.domain.errors import StoreUnavailableError
from stepkernel.domain.messages import MessageKind
from stepkernel.ports.store import Delivery
from stepkernel.runtime.grouping import DEFAULT_GROUP, DEFAULT_WINDOW, Failed, RunGroup
from stepkernel.runtime.prefetch import BatchRecords

if TYPE_CHECKING:
    from stepkernel.runtime.app import App

log = logging.getLogger("stepkernel.worker")


class Worker:
    """A pool of *threads* threads processing *app*'s queue.

    ``batch`` messages are leased per round trip; ``poll`` is the longest idle sleep;
    leases last ``lease_seconds`` and are extended by a heartbeat while a message is in
    hand, so a long step body is not delivered twice unless its worker dies.  Every
    ``recover_every`` seconds (``None``: never) the recovery sweep re-creates lost
    wake-ups.  The outcomes of step bodies run back to back are committed together, up
    to ``group`` of them, the oldest waiting at most ``group_window`` seconds for more
    (see :mod:`stepkernel.runtime.grouping`; ``group=1`` commits each on its own).
    """

    def __init__(
        self,
        app: App,
        *,
        threads: int = 2,
        batch: int = 32,
        poll: float = 0.05,
        lease_seconds: float | None = None,
        name: str | None = None,
        recover_every: float | None = 300.0,
        group: int = DEFAULT_GROUP,
        group_window: float = DEFAULT_WINDOW,
    ) -> None:
        if threads < 1 or batch < 1 or poll <= 0:
            raise ValueError("threads and batch must be >= 1, poll > 0")
        if group < 1 or not 0 <= group_window < float("inf"):
            raise ValueError("group must be >= 1, group_window a finite number >= 0")
        self.group = group
        self.group_window = group_window
        self.app = app
        self.threads = threads
        self.batch = batch
        self.poll = poll
        self.lease_seconds = lease_seconds or app.lease_seconds
        self.recover_every = recover_every
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self._stop = threading.Event()
        self._beats = threading.Event()
        self._loops: list[threading.Thread] = []
        self._helpers: list[threading.Thread] = []
        # Per thread, the leased messages it has not finished (see _InHand).  Each thread
        # only replaces its own entry (an atomic assignment); readers take copies, so
        # the hot path needs no lock shared between threads.
        self._inflight: dict[str, _InHand] = {}
        # Per loop thread, the group it is filling: the flusher thread commits what has
        # waited a window while the loop thread runs a slow body (see flush_stale).
        self._groups: dict[str, RunGroup] = {}
        self._counts = threading.Lock()
        self.processed = 0
        self.errors = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Worker:
        self._stop.clear()
        self._beats.clear()
        self._loops = []
        for n in range(self.threads):
            thread = threading.Thread(
                target=self._loop, args=(f"{self.name}/{n}",), name=f"stepkernel-{n}", daemon=True
            )
            thread.start()
            self._loops.append(thread)
        beat = threading.Thread(target=self._heartbeat, name="stepkernel-heartbeat", daemon=True)
        beat.start()
        self._helpers = [beat]
        if self.group > 1 and self.group_window > 0:
            flusher = threading.Thread(target=self._flusher, name="stepkernel-groups", daemon=True)
            flusher.start()
            self._helpers.append(flusher)
        if self.recover_every:
            sweep = threading.Thread(target=self._sweep, name="stepkernel-recovery", daemon=True)
            sweep.start()
            self._helpers.append(sweep)
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Finish the messages in hand (their leases kept alive meanwhile), release the
        rest, and join the threads."""
        self._stop.set()
        for thread in self._loops:
            thread.join(timeout)
        self._beats.set()  # only now: the heartbeat covered the messages in hand
        for thread in self._helpers:
            thread.join(timeout)
        self._loops = []
        self._helpers = []

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def run_forever(self, *, ready: Callable[[], None] | None = None) -> None:
        """Start, and stop cleanly on SIGTERM or SIGINT (main thread only).

        *ready* is called once the signal handlers are installed and the threads run;
        the previous handlers are restored on the way out.
        """

        def shutdown(_signum: int, _frame: FrameType | None) -> None:
            log.info("worker %s: stopping", self.name)
            self._stop.set()

        previous = {sig: signal.signal(sig, shutdown) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            if ready is not None:
                ready()
            while not self._stop.wait(0.2):
                pass
            self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def wait_idle(self, *, timeout: float = 60.0, settle: float = 0.05) -> bool:
        """Block until the queue has nothing due and nothing in hand (True), or timeout."""
        store = self.app.store
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            due = store.next_due()
            busy = any(dict(self._inflight).values())
            if not busy and (due is None or due > store.now() + settle):
                time.sleep(settle)
                due = store.next_due()
                busy = any(dict(self._inflight).values())
                if not busy and (due is None or due > store.now() + settle):
                    return True
            time.sleep(settle)
        return False

    # -- threads ---------------------------------------------------------------------------

    def _loop(self, worker: str) -> None:
        """One thread: lease a batch and run it, or wait for work when nothing is due.

        Contract: only :meth:`stop` (or a crash in user code, see :meth:`_run_batch`)
        ends this thread.  A store call of the loop that fails -- ``lease``,
        ``next_due``, ``wait_for_work``; :class:`StoreUnavailableError` after a killed
        backend or a server restart, or any other error -- is logged and the round is
        tried again after ``poll``, backing off while failures repeat (see
        :meth:`_backoff`; at least a second after an unexpected error).  A
        thread that ended on such an error would leave its process alive (heartbeat
        and recovery sweep still running, so no supervisor restarts it) but leasing
        nothing; once every thread of every worker had met one, messages whose lease
        ran out (e.g. a run message whose ``load`` failed on the killed backend) were
        never delivered again.
        """
        store = self.app.store
        self._inflight[worker] = _NOTHING
        failures = 0  # store calls of this loop that failed in a row
        while not self._stop.is_set():
            try:
                batch = store.lease(
                    worker=worker, limit=self.batch, lease_seconds=self.lease_seconds
                )
                if not batch:
                    due = store.next_due()
                    wait = self.poll if due is None else min(self.poll, max(0.0, due - store.now()))
                    store.wait_for_work(max(wait, 0.001))  # LISTEN/NOTIFY where the store has it
                    failures = 0
                    continue
            except StoreUnavailableError as exc:
                failures += 1
                delay = self._backoff(failures, retryable=exc.retryable)
                log.log(
                    logging.WARNING if exc.retryable else logging.ERROR,
                    "worker %s: store unavailable (%d in a row; trying again in %.2fs): %s",
                    *(worker, failures, delay, exc),
                )
                self._stop.wait(delay)
                continue
            except Exception:
                # Not a store outage (a bug in an adapter, say): keep the thread, slow down.
                failures += 1
                log.exception("worker %s: store call failed; trying again", worker)
                self._stop.wait(max(self._backoff(failures, retryable=True), 1.0))
                continue
            failures = 0
            try:
                self._run_batch(worker, batch)
            except Exception:  # not from user code (_guard catches those): keep going
                log.exception("worker %s: handling a batch failed; leasing again", worker)
                self._stop.wait(max(self.poll, 1.0))

    def _backoff(self, failures: int, *, retryable: bool) -> float:
        """How long a loop thread waits after *failures* failed rounds in a row: ``poll``,
        doubling each time, at most 5 s -- or 30 s when the error says retrying cannot
        help by itself (e.g. :class:`~stepkernel.adapters.redis.RedisDataLostError`:
        an operator must restore the data; the thread carries on once they have)."""
        cap = 5.0 if retryable else 30.0
        return float(min(cap, self.poll * 2 ** min(failures - 1, 20)))

    def _run_batch(self, worker: str, batch: list[Delivery]) -> None:
        """Process *batch* in order, its unfinished part covered by the heartbeat (run
        messages through a :class:`RunGroup`); on :meth:`stop`, commit what the group
        holds and release the leases of the messages not started.  A crash in user code
        (``KeyboardInterrupt``/``SystemExit``) drops what the group holds, as a killed
        process would: those messages are delivered again."""
        store = self.app.store
        held = [d.message.id for d in batch]
        in_hand = _InHand(held)
        self._inflight[worker] = in_hand  # the heartbeat covers the prefetch too
        known = BatchRecords(store)  # the batch's records: one load, kept current
        known.prefetch(d.message for d in batch)  # never raises: see BatchRecords
        group = RunGroup(
            self.app.engine,
            known,
            limit=self.group,
            window=self.group_window,
            on_flush=functools.partial(self._flushed, worker),
        )
        self._groups[worker] = group
        in_hand.group = group
        try:
            for position, delivery in enumerate(batch):
                if self._stop.is_set():
                    group.flush()
                    self._release(held[position:], worker)
                    break
                in_hand.position = position
                if delivery.message.kind is MessageKind.RUN and self.group > 1:
                    self._guard(delivery.message.id, functools.partial(group.add, delivery))
                else:
                    group.flush()
                    self._guard(
                        delivery.message.id,
                        functools.partial(self.app.engine.handle, delivery, known),
                    )
            else:
                group.flush()
        except BaseException:
            # KeyboardInterrupt/SystemExit from user code: a crash.  Stop holding the
            # leases (they expire and the messages are redelivered) and stop the pool.
            log.critical("worker %s: crashed in user code; stopping", worker, exc_info=True)
            self._stop.set()
            raise
        finally:
            self._groups.pop(worker, None)
            self._inflight[worker] = _NOTHING

    def _guard(self, what: str, work: Callable[[], object]) -> None:
        """Run *work* for message *what*; count it processed, unless it was a run whose
        outcome is now held (counted when its group commits, see :meth:`_flushed`).
        An error (not from user code, which the engine catches) is logged and the
        message is delivered again later."""
        try:
            held = work()
        except StoreUnavailableError as exc:
            self._count(errors=1)
            log.warning("message %s: store unavailable (%s); it will be redelivered", what, exc)
            return
        except Exception:
            self._count(errors=1)
            log.exception("message %s failed; it will be redelivered", what)
            return
        if held is not True:
            self._count(processed=1)

    def _flushed(self, worker: str, done: list[Delivery], failed: Failed) -> None:
        """A group of *worker* committed: count; give back the leases of what failed,
        so it is delivered again now rather than when the lease runs out."""
        self._count(processed=len(done), errors=len(failed))
        if failed:
            self._release([d.message.id for d, _exc in failed], worker)

    def _count(self, *, processed: int = 0, errors: int = 0) -> None:
        with self._counts:  # the flusher thread counts too
            self.processed += processed
            self.errors += errors

    def _release(self, ids: list[str], worker: str) -> None:
        try:
            self.app.store.release(ids, worker=worker)
        except Exception as exc:  # the leases simply run out
            log.warning("worker %s: could not release leases: %s", worker, exc)

    def _flusher(self) -> None:
        """Every half window, commit the outcomes each loop thread has held for a
        window, even while that thread is inside a slow step body."""
        interval = max(self.group_window / 2, 0.005)  # a tiny window: no busy loop
        while not self._beats.wait(interval):
            for group in list(self._groups.values()):
                try:
                    group.flush_stale()
                except Exception:  # keep flushing: the loop thread flushes at the latest
                    log.exception("committing a held group failed")

    def _sweep(self) -> None:
        """Run the recovery sweep now and then (see :mod:`stepkernel.runtime.recovery`)."""
        assert self.recover_every
        while not self._stop.wait(self.recover_every):
            try:
                restored = self.app.recover()
            except Exception:
                log.exception("recovery sweep failed")
                continue
            if restored:
                log.warning("recovery sweep re-created %d lost wake-up(s)", restored)

    def _heartbeat(self) -> None:
        store = self.app.store
        interval = max(self.lease_seconds / 3, 0.05)
        while not self._beats.wait(interval):
            held = {w: in_hand.ids() for w, in_hand in dict(self._inflight).items()}
            for worker, ids in held.items():
                if not ids:
                    continue
                try:
                    store.extend(ids, worker=worker, lease_seconds=self.lease_seconds)
                except StoreUnavailableError:
                    log.warning("heartbeat: store unavailable")
                except Exception:  # keep beating: a dead heartbeat lets leases in hand expire
                    log.exception("heartbeat: extending leases failed")


class _InHand:
    """The leased messages one loop thread has not finished: its batch from
    ``position`` on, and the messages whose outcomes its group holds.  The loop thread
    only moves ``position`` (cheap, once per message); the heartbeat and ``wait_idle``
    work out the ids when they need them."""

    __slots__ = ("group", "held", "position")

    def __init__(self, held: list[str], group: RunGroup | None = None) -> None:
        self.held = held
        self.position = 0
        self.group = group

    def ids(self) -> list[str]:
        # position first: a message held after this read is in the group's ids below.
        rest = self.held[self.position :]
        group = self.group.message_ids if self.group is not None else []
        return [*group, *rest]

    def __bool__(self) -> bool:
        return self.position < len(self.held) or bool(self.group is not None and len(self.group))


_NOTHING = _InHand([])
