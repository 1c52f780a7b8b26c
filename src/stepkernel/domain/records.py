"""Frozen records: the durable state the kernel reads and writes.

Records hold *current* state, not history.  Every record carries ``version`` (bumped by
exactly one per commit that writes it) and a digest chain: ``digest`` is computed from
``prev_digest``, the id of the event that produced this version and the canonical form of
the record's state, so torn or tampered state is detected on load (see
:func:`stepkernel.domain.encoding.verify_digest`).

Invariants are enforced by validators, so no record can exist in an impossible shape:
``attrs.evolve`` goes through ``__init__`` and re-checks them on every successor.
"""

from __future__ import annotations

import operator
from typing import Any, TypeVar

import attrs
from attrs import field, frozen

from stepkernel.domain.status import ActionStatus, StepStatus

_R = TypeVar("_R")

RecordKey = tuple[str, str]
"""``(kind, id)``: kind is ``"action"``, ``"lane"`` or ``"achievement"``."""

ACTION = "action"
LANE = "lane"
ACHIEVEMENT = "achievement"


@frozen
class ErrorInfo:
    """A recorded failure: exception type, message and (optional) traceback text."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def of(cls, type_: str, message: str) -> ErrorInfo:
        return cls(type=type_, message=message)


@frozen(
    slots=False
)  # dict-backed: attrs then builds it by writing the instance dict, faster than slots
class Dependent:
    """A step waiting on an action: ``dep_id`` is the dependency id inside that step.

    An action can serve several dependents: its own parent step, steps that joined it by
    checksum, and the waiting parents of actions it superseded.
    """

    action_id: str
    step: int
    dep_id: str


def _check_types(owner: str, instance: Any, tuples: tuple[str, ...], sets: tuple[str, ...]) -> None:
    for name in tuples:
        if type(getattr(instance, name)) is not tuple:
            raise TypeError(f"{owner}: {name} must be a tuple")
    for name in sets:
        if type(getattr(instance, name)) is not frozenset:
            raise TypeError(f"{owner}: {name} must be a frozenset")


_STEP_TUPLES = ("dependencies", "links", "wakes")
_STEP_SETS = ("settled", "failures")
_ACTION_TUPLES = ("step_names", "steps", "dependents")
_ACTION_SETS = ("after", "ancestor_lanes")


def _check_step(instance: StepRecord, _attribute: Any, _value: Any) -> None:
    state = instance.__dict__
    dependencies = state["dependencies"]
    settled = state["settled"]
    failures = state["failures"]
    if (
        type(dependencies) is not tuple
        or type(settled) is not frozenset
        or type(failures) is not frozenset
        or type(state["links"]) is not tuple
        or type(state["wakes"]) is not tuple
    ):
        _check_types(f"step {instance.index}", instance, _STEP_TUPLES, _STEP_SETS)
    if not dependencies:
        if settled or failures:
            raise ValueError(f"step {instance.index}: settled ids are not all dependencies")
        return
    # The set of dependency ids, checked once per tuple: a successor that keeps the
    # same tuple (a settlement) reuses its predecessor's (evolve copies the dict).
    memo = state.get(_DEPENDENCY_SET)
    if memo is not None and memo[0] is dependencies:
        deps = memo[1]
    else:
        deps = frozenset(dependencies)
        if len(deps) != len(dependencies):
            raise ValueError(f"step {instance.index}: duplicate dependency ids")
        state[_DEPENDENCY_SET] = (dependencies, deps)
    if not settled <= deps:
        raise ValueError(f"step {instance.index}: settled ids are not all dependencies")
    if not failures <= settled:
        raise ValueError(f"step {instance.index}: failures must be settled")
    wakes = state["wakes"]
    if wakes and not {dep for dep, _at in wakes} <= deps:
        raise ValueError(f"step {instance.index}: a wait that is not a dependency")
    if state["status"] is StepStatus.SUCCEEDED and (settled != deps or failures):
        raise ValueError(f"step {instance.index}: succeeded with open or failed dependencies")


_DEPENDENCY_SET = "_dependency_set"
"""Where a step keeps ``(dependencies, frozenset(dependencies))`` once checked: not a
field (not compared, encoded or reset), only a cache the validator trusts while the
tuple is the same object."""


@frozen(slots=False)  # dict-backed: see evolve()
class StepRecord:
    """One step of an action.

    ``dependencies`` lists the ids the step waits on, in fan-out order (children
    ``<step>/c<n>``, waits ``<step>/w<n>``); ``settled`` is the *set* of those already
    settled (a duplicate settlement is a no-op, never a double count); ``failures`` the
    settled ones that were unsuccessful.  ``links`` maps a dependency id to the action
    that actually serves it when that is not a new child (a checksum join); ``wakes``
    maps each timed wait to when it ends (so a lost timer can be re-created).
    """

    index: int
    name: str
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    dependencies: tuple[str, ...] = ()
    settled: frozenset[str] = frozenset()
    failures: frozenset[str] = field(default=frozenset(), validator=_check_step)
    links: tuple[tuple[str, str], ...] = ()
    wakes: tuple[tuple[str, float], ...] = ()
    error: ErrorInfo | None = None
    started_at: float | None = None
    finished_at: float | None = None
    encoded: list[Any] | None = field(default=None, init=False, eq=False, repr=False)

    @property
    def open(self) -> frozenset[str]:
        """Dependencies not settled yet."""
        return frozenset(self.dependencies) - self.settled


@frozen
class Completion:
    """An outside completion of an outbound action (kept early if it arrives early)."""

    id: str
    status: ActionStatus
    payload: str | None = None  # canonical JSON text


def _check_action(instance: ActionRecord, _attribute: Any, _value: Any) -> None:
    state = instance.__dict__
    steps = state["steps"]
    step_names = state["step_names"]
    if (
        type(steps) is not tuple
        or type(state["dependents"]) is not tuple
        or type(step_names) is not tuple
        or type(state["after"]) is not frozenset
        or type(state["ancestor_lanes"]) is not frozenset
    ):
        _check_types(f"action {instance.id}", instance, _ACTION_TUPLES, _ACTION_SETS)
    if steps:
        if state["status"] is ActionStatus.PENDING:
            raise ValueError(f"action {instance.id}: pending but has started steps")
        for position, step in enumerate(steps):
            if step.index != position:
                raise ValueError(f"action {instance.id}: step {position} has index {step.index}")
        if len(steps) > len(step_names) and len(steps) > 1:
            raise ValueError(f"action {instance.id}: more steps than defined")
    if state["callbacks"] not in _CALLBACK_STATES:
        raise ValueError(f"action {instance.id}: bad callbacks state {instance.callbacks!r}")


_CALLBACK_STATES = frozenset({"none", "pending", "ok", "failed"})


@frozen(slots=False)  # dict-backed: see evolve()
class Chained:
    """What every stored record carries: its version (one more per commit that writes
    it) and its digest chain -- the previous version's digest, the id of the event that
    produced this version, and ``digest`` over both and the state.

    A record the kernel writes is sealed *lazily* (see
    :func:`stepkernel.domain.encoding.seal_lazily`): it keeps a reference to the version
    it succeeds, and its canonical state text and digest are computed the first time
    ``digest`` or ``prev_digest`` is read -- which every store does when it commits.  The
    values are the same as eager sealing; only the moment differs, so ``decide`` itself
    does no hashing.  Equality compares version, last event and state, not digests.
    """

    version: int = field(default=0, kw_only=True)
    _prev_digest: str = field(default="", kw_only=True, eq=False)
    _digest: str = field(default="", kw_only=True, eq=False)
    last_event: str = field(default="", kw_only=True)
    state_text: str | None = field(default=None, init=False, eq=False, repr=False)
    # While the digest is unsettled: the predecessor it chains from (FIRST_VERSION when
    # there is none); None once settled or never sealed lazily.
    _base: object = field(default=None, init=False, eq=False, repr=False)
    # How many unsettled versions the chain holds, this one included (0 when settled):
    # a store keeping records unsettled can bound the chain (see unsettled_depth).
    _depth: int = field(default=0, init=False, eq=False, repr=False)

    @property
    def unsettled_depth(self) -> int:
        """How many versions would be hashed if the digest were read now (this one and
        the unsettled ones it chains from); 0 when the digest is settled."""
        return self._depth if self._base is not None else 0

    @property
    def digest(self) -> str:
        """This version's digest (``""`` on a record never sealed)."""
        if self._base is not None:
            _settle(self)
        return self._digest

    @property
    def prev_digest(self) -> str:
        """The digest of the version this one succeeds (``""`` for a first version)."""
        if self._base is not None:
            _settle(self)
        return self._prev_digest


FIRST_VERSION = object()
"""The ``_base`` of a lazily sealed first version: it chains from nothing."""


def _settle(record: Chained) -> None:
    # encoding imports this module; the import is deferred to the first digest read.
    from stepkernel.domain.encoding import settle_digest

    settle_digest(record)


@frozen(slots=False)  # dict-backed: see evolve()
class ActionRecord(Chained):
    """An action: identity, arguments, resolved keys, steps so far, and its outcome.

    ``arguments`` is canonical JSON text of the argument list after the ``before`` hook.
    ``ancestor_lanes`` are the lanes held by the ancestors (for deadlock detection).
    ``callbacks`` is ``"none"`` (no after callbacks for the final status, or not final),
    ``"pending"`` (final, callbacks not run yet), ``"ok"`` or ``"failed"``.
    """

    id: str
    root_id: str
    parent: Dependent | None
    name: str
    actor_type: str
    actor_key: str
    arguments: str
    step_names: tuple[str, ...]
    concurrency_key: str
    checksum_key: str
    checksum: str | None = None
    outbound: bool = False
    timeout: float | None = None
    after: frozenset[ActionStatus] = frozenset()
    ancestor_lanes: frozenset[str] = frozenset()
    status: ActionStatus = ActionStatus.PENDING
    steps: tuple[StepRecord, ...] = ()
    dependents: tuple[Dependent, ...] = ()
    deadline: float | None = None
    awaiting_completion: bool = False
    early_completion: Completion | None = None
    completion_id: str | None = None
    output: str | None = None
    error: ErrorInfo | None = None
    callbacks: str = field(default="none", validator=_check_action)
    superseded_by: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def unreadable(cls, action_id: str, reason: str, now: float) -> ActionRecord:
        """A failed stand-in for an action whose stored record does not decode: the
        action fails with a ``CorruptRecordError`` instead of stopping the worker."""
        return cls(
            id=action_id,
            root_id=action_id,
            parent=None,
            name="unreadable",
            actor_type="",
            actor_key="",
            arguments="[]",
            step_names=("unreadable",),
            concurrency_key="",
            checksum_key="",
            status=ActionStatus.FAILED,
            error=ErrorInfo.of("CorruptRecordError", reason),
            created_at=now,
            finished_at=now,
        )

    @property
    def key(self) -> RecordKey:
        return (ACTION, self.id)

    @property
    def current_step(self) -> StepRecord | None:
        return self.steps[-1] if self.steps else None

    @property
    def settled_for_parents(self) -> bool:
        """Final and done with callbacks: parents can be told the outcome."""
        return self.status.terminal and self.callbacks != "pending"

    @property
    def successful(self) -> bool:
        """Succeeded and every after callback succeeded."""
        return self.status is ActionStatus.SUCCEEDED and self.callbacks != "failed"


def _check_lane(instance: LaneRecord, _attribute: Any, _value: Any) -> None:
    if type(instance.queue) is not tuple:
        raise TypeError(f"lane {instance.key}: queue must be a tuple")


@frozen
class QueueEntry:
    """A pending action waiting on a lane, with what checksum joins compare."""

    action_id: str
    checksum_key: str
    checksum: str | None


@frozen(slots=False)  # dict-backed: see evolve()
class LaneRecord(Chained):
    """A concurrency lane: at most one holder performing, later actions queued FIFO.

    An empty lane is deleted, not kept.  (Deadlock detection reads the wait-for graph
    from the actions, see :mod:`stepkernel.domain.lanes`; lanes store no edges.)
    """

    key: str
    holder: str | None = None
    holder_checksum: tuple[str, str] | None = None
    queue: tuple[QueueEntry, ...] = field(default=(), validator=_check_lane)

    @property
    def record_key(self) -> RecordKey:
        return (LANE, self.key)

    @property
    def empty(self) -> bool:
        return self.holder is None and not self.queue


@frozen(slots=False)  # dict-backed: see evolve()
class AchievementRecord(Chained):
    """The achievement scope of a checksum key.

    ``checksum`` is the last succeeded checksum (granted by ``action_id``), unless an
    action has started in the scope since: then ``claimed_by`` names the last action
    that started, the achievement is erased (``checksum`` is ``""``), and only that
    action's success may grant it again -- an older action finishing later never
    overwrites what a newer one started.
    """

    key: str
    checksum: str
    action_id: str
    claimed_by: str | None = None

    @property
    def achieved(self) -> str | None:
        """The checksum that counts as achieved now, if any."""
        return self.checksum if self.claimed_by is None and self.checksum else None

    @property
    def record_key(self) -> RecordKey:
        return (ACHIEVEMENT, self.key)


Record = ActionRecord | LaneRecord | AchievementRecord


def key_of(record: Record) -> RecordKey:
    """The store key of *record*."""
    if isinstance(record, ActionRecord):
        return (ACTION, record.id)
    if isinstance(record, LaneRecord):
        return (LANE, record.key)
    return (ACHIEVEMENT, record.key)


@frozen(
    slots=False
)  # dict-backed: attrs then builds it by writing the instance dict, faster than slots
class Tombstone:
    """A deletion of the record at ``key`` whose current version is ``version``."""

    key: RecordKey
    version: int


@frozen
class _Shape:
    """How to build successors of one record class quickly (see :func:`evolve`)."""

    names: frozenset[str]  # the init fields, by their attribute names
    # Dict-backed classes: the values of the fields a successor does not inherit (the
    # version and digest chain, cached encodings); None for slotted classes.
    reset: dict[str, Any] | None
    checks: tuple[tuple[Any, Any], ...]  # (validator, attribute) of every validated field
    get_positional: Any  # slotted classes: attrgetter of the positional init fields
    index: dict[str, int]  # slotted classes: positional field alias -> its index


_SHAPES: dict[type, _Shape] = {}
_new = object.__new__
_setattr = object.__setattr__


def _shape(cls: type) -> _Shape:
    fields = attrs.fields(cls)
    inits = [a for a in fields if a.init]
    positional = tuple(a.alias for a in inits if not a.kw_only)
    reset = None
    if "__slots__" not in cls.__dict__:
        reset = {}
        for a in fields:
            if a.kw_only or not a.init:
                if isinstance(a.default, attrs.Factory):  # type: ignore[arg-type]
                    raise TypeError(f"{cls.__name__}.{a.name}: evolve() cannot reset a factory")
                reset[a.name] = a.default
            if a.converter is not None:
                raise TypeError(f"{cls.__name__}.{a.name}: evolve() does not run converters")
    shape = _Shape(
        names=frozenset(a.name for a in inits if not a.kw_only),
        reset=reset,
        checks=tuple((a.validator, a) for a in fields if a.validator is not None),
        get_positional=operator.attrgetter(*positional),
        index={name: i for i, name in enumerate(positional)},
    )
    _SHAPES[cls] = shape
    return shape


def evolve(inst: _R, **changes: Any) -> _R:
    """The successor of *inst* with *changes*: ``attrs.evolve`` for our records, minus
    its per-call field introspection, and *unsealed* -- the version and digest fields
    (keyword-only, see :class:`Chained`) are not carried over; the kernel seals every
    record it writes (:func:`stepkernel.domain.encoding.seal_lazily`).

    The successor is checked like a freshly built instance: the class's validators run
    on it (dict-backed records have no converters -- they check types instead, see
    ``_check_step``); an unknown field name raises ``TypeError``.  Records are dict-backed so that a successor is a copy of
    the predecessor's attribute dict plus the changes -- several times cheaper than
    ``__init__`` on a 30-field record, and the kernel builds two or three per event.
    """
    cls = type(inst)
    shape = _SHAPES.get(cls) or _shape(cls)
    reset = shape.reset
    if reset is None:  # slotted: rebuild through __init__
        values = list(shape.get_positional(inst))
        keywords: dict[str, Any] = {}
        index = shape.index
        for name, value in changes.items():
            position = index.get(name)
            if position is None:
                keywords[name] = value
            else:
                values[position] = value
        return cls(*values, **keywords)
    if not shape.names.issuperset(changes):
        unknown = sorted(set(changes) - shape.names)
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    state = inst.__dict__.copy()  # about twice as fast as {**a, **b, **c} here
    state.update(reset)
    state.update(changes)
    successor = _new(cls)
    _setattr(successor, "__dict__", state)
    for check, attribute in shape.checks:
        check(successor, attribute, state[attribute.name])
    return successor
