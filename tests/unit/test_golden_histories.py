"""Golden histories: committed event logs whose replay must reproduce their digests.

Regenerate after an intended change of meaning with ``STEPKERNEL_REGOLD=1 pytest
tests/unit/test_golden_histories.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import pytest

from stepkernel import (
    ActionStatus,
    App,
    ErrorInfo,
    Registry,
    ReplayDivergenceError,
    RetryPolicy,
)
from stepkernel.domain.replay import Entry, replay
from stepkernel.ports.store import ActionQuery
from stepkernel.testing import drain, memory_app
from stepkernel.testing.history import load_history, record_history, save_history

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "deploy.json"


class Flaky(Exception):
    """A transient failure the retry policy handles."""


@attrs.define
class Host:
    id: str


def deploy_registry() -> Registry:
    """Every mechanism once: fan-out, waits, lanes and superseding, checksum skip and
    join, outbound completion (one early), retries, a timeout, a deadlock, callbacks."""
    reg = Registry()
    reg.register_actor(Host, key=lambda h: h.id, load=Host)
    attempts: dict[str, int] = {}

    def provision(step: Any, host: Host, version: str) -> None:
        step.on([Host("dns-a"), None, Host("dns-b")], "record", version)
        step.do("boot", version)
        step.wait(5)

    def boot(step: Any, host: Host, version: str) -> None:
        step.wait(30)
        step.do("check", version)

    def check(step: Any, host: Host, version: str) -> None:
        attempts[version] = attempts.get(version, 0) + 1
        if attempts[version] < 3:
            raise Flaky(f"not ready ({attempts[version]})")

    def finish(step: Any, host: Host, version: str) -> None:
        if version == "v1":
            step.do("self_lane")  # the deploy's own lane: deadlocked

    deploy = reg.action(
        Host,
        "deploy",
        checksum=lambda host, version: version,
        concurrency_key=lambda host, version: f"deploy/{host.id}",
        steps=[provision, finish],
    )
    deploy.after("all")(lambda action, host, version: None)
    reg.action(Host, "record", outbound=True, steps=[lambda step, host, version: None])
    reg.action(Host, "boot", steps=[boot])
    reg.action(Host, "check", steps=[check])
    reg.action(
        Host,
        "self_lane",
        concurrency_key=lambda host: f"deploy/{host.id}",
        steps=[lambda step, host: None],
    )
    reg.action(Host, "stuck", timeout=60, steps=[lambda step, host: step.wait(600)])
    return reg


def run_scenario() -> tuple[App, list[Entry]]:
    """The golden scenario, deterministic under the memory app's fake clock and ids."""
    app = memory_app(
        deploy_registry(), retry=RetryPolicy(attempts=4, initial_delay=2, jitter=0.5), seed=7
    )
    entries = record_history(app)
    first = app.invoke_now(Host("web"), "deploy", "v1")
    app.invoke_later(Host("web"), "deploy", "v2")
    app.invoke_later(Host("web"), "deploy", "v3")
    app.invoke_later(Host("db"), "stuck")
    # v1's DNS records exist once its first step ran: complete them early, by id.
    for record in app.store.find_actions(ActionQuery(name="record")):
        app.complete(record.id, payload={"ip": record.actor_key})
    drain(app, outbound=lambda action: ("succeeded", {"ip": action.actor_key}))
    assert app.invoke_now(Host("web"), "deploy", "v3").outcome == "achieved"
    drain(app, outbound=lambda action: "succeeded")
    assert app.get(first.id or "").status is ActionStatus.FAILED  # deadlocked child
    return app, entries


def test_scenario_is_deterministic() -> None:
    """Running the scenario twice commits the same events with the same digests (in one
    checkout: tracebacks name source lines)."""
    _, first = run_scenario()
    _, second = run_scenario()
    assert first == second


def test_golden_history_replays_to_its_recorded_digests() -> None:
    """Replaying the committed golden history reproduces every recorded digest."""
    if os.environ.get("STEPKERNEL_REGOLD"):
        save_history(run_scenario()[1], GOLDEN)
    entries = load_history(GOLDEN)
    assert len(entries) > 30
    state = replay(entries)
    assert state


def _portable(entries: list[Entry]) -> list[tuple[Any, float]]:
    """Events and times with tracebacks blanked (they name files and line numbers)."""

    def strip(value: Any) -> Any:
        if isinstance(value, ErrorInfo):
            return attrs.evolve(value, traceback="")
        if attrs.has(type(value)):
            return attrs.evolve(
                value, **{f.name: strip(getattr(value, f.name)) for f in attrs.fields(type(value))}
            )
        if isinstance(value, tuple):
            return tuple(strip(v) for v in value)
        return value

    return [(strip(e.event), e.now) for e in entries]


def test_scenario_still_commits_the_golden_events() -> None:
    """Today's runtime commits exactly the golden events at the golden times (their
    digests are checked by the replay test, which does not depend on source paths)."""
    assert _portable(run_scenario()[1]) == _portable(load_history(GOLDEN))


def test_replay_reports_the_first_divergence() -> None:
    """A history whose recorded digest differs raises ReplayDivergenceError naming the
    entry, the key and both digests."""
    entries = load_history(GOLDEN)
    index = next(i for i, e in enumerate(entries) if e.digests)
    key, digest = entries[index].digests[0]
    tampered = attrs.evolve(
        entries[index], digests=((key, "0" * len(digest)), *entries[index].digests[1:])
    )
    with pytest.raises(ReplayDivergenceError) as raised:
        replay([*entries[:index], tampered])
    error = raised.value
    assert (error.index, error.key, error.expected) == (index, key, "0" * len(digest))  # type: ignore[attr-defined]
    assert error.actual == digest  # type: ignore[attr-defined]
