"""Hypothesis strategies for stepkernel: JSON values, statuses and triggers, valid
records (sealed or not) and random workflow shapes for the crash simulation.

Requires ``hypothesis`` (a dev dependency); import this module only from tests.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from hypothesis import strategies as st

from stepkernel.domain.checksum import canonical_json
from stepkernel.domain.encoding import seal
from stepkernel.domain.records import (
    AchievementRecord,
    ActionRecord,
    Completion,
    Dependent,
    ErrorInfo,
    LaneRecord,
    QueueEntry,
    Record,
    StepRecord,
)
from stepkernel.domain.status import (
    CALLBACK_STATUSES,
    ActionStatus,
    ActionTrigger,
    StepStatus,
    StepTrigger,
)

# -- JSON ------------------------------------------------------------------------------------

json_scalars: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
"""JSON scalars (finite floats only)."""


def json_values(*, max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value: scalars, lists and string-keyed dicts, nested."""
    return st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=max_leaves,
    )


# -- statuses and triggers -----------------------------------------------------------------------

action_statuses = st.sampled_from(ActionStatus)
step_statuses = st.sampled_from(StepStatus)
action_triggers = st.sampled_from(ActionTrigger)
step_triggers = st.sampled_from(StepTrigger)

# -- records ---------------------------------------------------------------------------------------

_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.#", min_size=1, max_size=8)
_names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
_times = st.none() | st.floats(min_value=0, max_value=2e9, allow_nan=False)
_maybe_text = st.none() | st.text(max_size=8)

error_infos = st.builds(
    ErrorInfo, type=_names, message=st.text(max_size=12), traceback=st.text(max_size=12)
)
dependents = st.builds(Dependent, action_id=_ids, step=st.integers(0, 5), dep_id=_ids)


@st.composite
def step_records(draw: st.DrawFn, index: int = 0) -> StepRecord:
    """A valid :class:`StepRecord` at *index*: settled within dependencies, failures
    within settled, a succeeded step fully settled without failures."""
    status = draw(step_statuses)
    dependencies = draw(st.lists(_ids, unique=True, max_size=4))
    if status is StepStatus.PENDING:
        settled: list[str] = []
        failures: list[str] = []
    elif status is StepStatus.SUCCEEDED:
        settled, failures = list(dependencies), []
    else:
        settled = [d for d in dependencies if draw(st.booleans())]
        failures = [d for d in settled if draw(st.booleans())]
    return StepRecord(
        index=index,
        name=draw(_names),
        status=status,
        attempt=draw(st.integers(0, 4)),
        dependencies=tuple(dependencies),
        settled=frozenset(settled),
        failures=frozenset(failures),
        links=tuple(draw(st.lists(st.tuples(_ids, _ids), max_size=2))),
        error=draw(st.none() | error_infos),
        started_at=draw(_times),
        finished_at=draw(_times),
    )


@st.composite
def action_records(draw: st.DrawFn) -> ActionRecord:
    """A valid :class:`ActionRecord` (a pending one has no steps)."""
    status = draw(action_statuses)
    step_names = draw(st.lists(_names, min_size=1, max_size=3))
    count = 0 if status is ActionStatus.PENDING else draw(st.integers(0, len(step_names)))
    steps = [draw(step_records(index)) for index in range(count)]
    early = draw(st.none() | st.tuples(_ids, st.sampled_from(CALLBACK_STATUSES), _maybe_text))
    return ActionRecord(
        id=draw(_ids),
        root_id=draw(_ids),
        parent=draw(st.none() | dependents),
        name=draw(_names),
        actor_type=draw(_names),
        actor_key=draw(st.text(max_size=6)),
        arguments=draw(json_values(max_leaves=4).map(_canonical_list)),
        step_names=tuple(step_names),
        concurrency_key=draw(st.text(min_size=1, max_size=10)),
        checksum_key=draw(st.text(min_size=1, max_size=10)),
        checksum=draw(st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
        outbound=draw(st.booleans()),
        timeout=draw(st.none() | st.floats(min_value=0.5, max_value=1e5)),
        after=draw(st.frozensets(st.sampled_from(CALLBACK_STATUSES))),
        ancestor_lanes=draw(st.frozensets(st.text(min_size=1, max_size=6), max_size=3)),
        status=status,
        steps=tuple(steps),
        dependents=tuple(draw(st.lists(dependents, max_size=3))),
        deadline=draw(_times),
        awaiting_completion=draw(st.booleans()),
        early_completion=None if early is None else Completion(*early),
        completion_id=draw(st.none() | _ids),
        output=draw(_maybe_text),
        error=draw(st.none() | error_infos),
        callbacks=draw(st.sampled_from(("none", "pending", "ok", "failed"))),
        superseded_by=draw(st.none() | _ids),
        created_at=draw(st.floats(min_value=0, max_value=2e9)),
        started_at=draw(_times),
        finished_at=draw(_times),
    )


def _canonical_list(value: Any) -> str:
    return canonical_json([value])


queue_entries = st.builds(
    QueueEntry,
    action_id=_ids,
    checksum_key=st.text(min_size=1, max_size=6),
    checksum=st.none() | st.text(max_size=8),
)

lane_records = st.builds(
    LaneRecord,
    key=st.text(min_size=1, max_size=10),
    holder=st.none() | _ids,
    holder_checksum=st.none() | st.tuples(st.text(max_size=6), st.text(max_size=6)),
    queue=st.lists(queue_entries, max_size=3).map(tuple),
)

achievement_records = st.builds(
    AchievementRecord,
    key=st.text(min_size=1, max_size=10),
    checksum=st.text(min_size=1, max_size=64),
    action_id=_ids,
)

records: st.SearchStrategy[Record] = st.one_of(action_records(), lane_records, achievement_records)
"""Any valid, unsealed record."""


@st.composite
def sealed_records(draw: st.DrawFn) -> Record:
    """A record sealed as some version produced by some event (digest consistent)."""
    return seal(
        draw(records),
        version=draw(st.integers(1, 10_000)),
        prev_digest=draw(st.text(alphabet="0123456789abcdef", max_size=32)),
        event_id=draw(st.text(min_size=1, max_size=16)),
    )


# -- workflow shapes (for the crash simulation) -----------------------------------------------

FAIL_MODES = ("none", "raise_once", "raise_always", "mark_failed")
"""How a generated step body misbehaves: never, raises on its first attempt only, raises
on every attempt (the retry policy gives up), or marks the step failed."""


@frozen
class ChildShape:
    """Fan out action ``kind`` on the actor ``offset`` places after the step's own."""

    kind: int
    offset: int


@frozen
class StepShape:
    children: tuple[ChildShape, ...]
    waits: tuple[int, ...]
    fail: str


@frozen
class ActionShape:
    """Action ``a<kind>``: its steps, lane (``None`` = own lane per actor), checksum,
    outbound flag, timeout and whether it has an after callback."""

    kind: int
    steps: tuple[StepShape, ...]
    lane: str | None
    checksum: bool
    outbound: bool
    timeout: int | None
    after: bool


@st.composite
def action_shapes(draw: st.DrawFn, kind: int, kinds: int) -> ActionShape:
    """Action ``kind`` of *kinds*; children only use later kinds, so trees are finite."""
    later = list(range(kind + 1, kinds))
    children = (
        st.lists(
            st.builds(ChildShape, kind=st.sampled_from(later), offset=st.integers(0, 2)), max_size=2
        )
        if later
        else st.just([])
    )
    step = st.builds(
        StepShape,
        children=children.map(tuple),
        waits=st.lists(st.integers(1, 5), max_size=1).map(tuple),
        fail=st.sampled_from(("none", "none", *FAIL_MODES)),
    )
    return ActionShape(
        kind=kind,
        steps=tuple(draw(st.lists(step, min_size=1, max_size=2))),
        lane=draw(st.none() | st.sampled_from(("L0", "L1"))),
        checksum=draw(st.booleans()),
        outbound=draw(st.booleans()),
        timeout=draw(st.none() | st.integers(5, 60)),
        after=draw(st.booleans()),
    )


@st.composite
def workflow_shapes(draw: st.DrawFn, *, max_kinds: int = 4) -> tuple[ActionShape, ...]:
    """2..*max_kinds* action shapes forming random finite trees."""
    kinds = draw(st.integers(2, max_kinds))
    return tuple(draw(action_shapes(kind, kinds)) for kind in range(kinds))
