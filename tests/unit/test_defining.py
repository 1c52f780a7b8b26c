"""Defining actions: steps, stepless actions, before hooks, resolvers, options,
inheritance and plain actors."""

from __future__ import annotations

from typing import Any

import pytest
from actors import Fleet, Server, SubServer, records, statuses

from stepkernel import ActionStatus, App, Registry, StepStatus, checksum
from stepkernel.testing import drain, memory_app


def test_steps_run_in_definition_order(reg: Registry, app: App) -> None:
    """``ActionDefinition.step`` appends: steps run one after another in that order."""
    ran: list[str] = []
    deploy = reg.action(Server, "deploy")
    for name in ("first", "second", "third"):
        deploy.step(lambda step, server, n=name: ran.append(n), name=name)
    action = app.invoke_now(Server(1), "deploy")
    assert ran == ["first", "second", "third"]
    assert [s.name for s in action.steps] == ["first", "second", "third"]
    assert action.status is ActionStatus.SUCCEEDED


def test_stepless_action_calls_actor_method(reg: Registry, app: App, fleet: Fleet) -> None:
    """An action with no steps gets one step calling the actor's method of its name."""
    reg.action(Server, "ping")
    action = app.invoke_now(fleet.get(1), "ping", 7, "x")
    assert action.status is ActionStatus.SUCCEEDED
    assert [s.name for s in action.steps] == ["ping"]
    assert fleet.get(1).calls == [("ping", (7, "x"))]


def test_before_replaces_arguments(reg: Registry, app: App) -> None:
    """A before hook may replace ``action.arguments``; steps get the new ones."""
    seen: list[Any] = []
    deploy = reg.action(Server, "deploy")
    deploy.before(lambda action, server, version: setattr(action, "arguments", ["v2"]))
    deploy.step(lambda step, server, version: seen.append(version))
    action = app.invoke_now(Server(1), "deploy", "v1")
    assert seen == ["v2"]
    assert action.arguments == ("v2",)


@pytest.mark.parametrize(
    ("verb", "status"),
    [("cancel", ActionStatus.CANCELLED), ("complete", ActionStatus.SUCCEEDED)],
)
def test_before_short_circuit_creates_no_records(
    reg: Registry, app: App, verb: str, status: ActionStatus
) -> None:
    """A before hook that cancels or completes ends the action with no record stored."""
    ran: list[int] = []
    deploy = reg.action(Server, "deploy")
    deploy.before(lambda action, server: getattr(action, verb)())
    deploy.step(lambda step, server: ran.append(1))
    action = app.invoke_now(Server(1), "deploy")
    assert (action.id, action.status, action.outcome) == (None, status, "short_circuited")
    drain(app)
    assert records(app) == {}
    assert app.store.queued() == []
    assert ran == []


@pytest.mark.parametrize(
    ("verb", "parent_status"),
    [("complete", ActionStatus.SUCCEEDED), ("cancel", ActionStatus.FAILED)],
)
def test_before_short_circuit_child_reports_to_parent(
    reg: Registry, app: App, verb: str, parent_status: ActionStatus
) -> None:
    """A child short-circuited by its before hook settles the parent step at once:
    completed -> the step succeeds, cancelled -> the step fails; no child record."""
    guarded = reg.action(Server, "guarded")
    guarded.before(lambda action, server: getattr(action, verb)())
    parent = reg.action(Server, "parent")
    parent.step(lambda step, server: step.do("guarded"))
    root = app.invoke_now(Server(1), "parent")
    drain(app)
    final = app.get(root.id or "")
    assert final.status is parent_status
    assert final.steps[0].status is (
        StepStatus.SUCCEEDED if parent_status is ActionStatus.SUCCEEDED else StepStatus.FAILED
    )
    assert list(statuses(app, root.id)) == [root.id]


def _key_of(app: App, action_id: str | None, field: str) -> Any:
    return getattr(records(app)[("action", action_id)], field)


@pytest.mark.parametrize(
    "resolver", [lambda server, version: f"lane-{version}", "lane_of"], ids=["callable", "method"]
)
def test_concurrency_key_resolver(reg: Registry, app: App, resolver: Any) -> None:
    """``concurrency_key`` is a callable ``(actor, *args)`` or an actor method name."""
    reg.action(Server, "deploy", concurrency_key=resolver, steps=[lambda step, s, v: None])
    action = app.invoke_later(Server(3), "deploy", "v1")
    assert action.concurrency_key == ("lane-v1" if callable(resolver) else "fleet/3")


@pytest.mark.parametrize(
    "resolver", [lambda server, version: f"scope-{version}", "lane_of"], ids=["callable", "method"]
)
def test_checksum_key_resolver(reg: Registry, app: App, resolver: Any) -> None:
    """``checksum_key`` is a callable or an actor method name."""
    reg.action(
        Server,
        "deploy",
        checksum_key=resolver,
        checksum=lambda s, v: v,
        steps=[lambda step, s, v: None],
    )
    action = app.invoke_later(Server(3), "deploy", "v1")
    expected = "scope-v1" if callable(resolver) else "fleet/3"
    assert _key_of(app, action.id, "checksum_key") == expected


@pytest.mark.parametrize(
    "resolver", [lambda server, *args: list(args), "checksum_of"], ids=["callable", "method"]
)
def test_checksum_resolver(reg: Registry, app: App, resolver: Any) -> None:
    """``checksum`` is a callable or an actor method name; the stored checksum is the
    SHA-256 of the canonical JSON of what it returns."""
    reg.action(Server, "deploy", checksum=resolver, steps=[lambda step, s, *a: None])
    action = app.invoke_later(Server(3), "deploy", "v1", 2)
    assert action.checksum == checksum(["v1", 2])


def test_key_resolver_list_joins_with_slash(reg: Registry, app: App) -> None:
    """A key resolver returning a list of strings is joined with ``/``."""
    reg.action(
        Server,
        "deploy",
        concurrency_key=lambda s: ["region", "eu", str(s.id)],
        steps=[lambda step, s: None],
    )
    assert app.invoke_later(Server(4), "deploy").concurrency_key == "region/eu/4"


@pytest.mark.parametrize("blank", [None, ""])
def test_blank_key_means_default(reg: Registry, app: App, blank: str | None) -> None:
    """A blank resolver result (``None`` or ``""``) means ``Type/actor-key/action``."""
    reg.action(
        Server,
        "deploy",
        concurrency_key=lambda s: blank,
        checksum_key=lambda s: blank,
        checksum=lambda s: 1,
        steps=[lambda step, s: None],
    )
    action = app.invoke_later(Server(5), "deploy")
    assert action.concurrency_key == "Server/5/deploy"
    assert _key_of(app, action.id, "checksum_key") == "Server/5/deploy"


def test_keys_use_original_arguments_checksum_uses_final(reg: Registry, app: App) -> None:
    """Concurrency and checksum keys see the arguments as invoked; the checksum sees
    them after the before hook replaced them."""
    deploy = reg.action(
        Server,
        "deploy",
        concurrency_key=lambda s, v: f"lane-{v}",
        checksum_key=lambda s, v: f"scope-{v}",
        checksum=lambda s, v: v,
    )
    deploy.before(lambda action, server, v: setattr(action, "arguments", ["new"]))
    deploy.step(lambda step, s, v: None)
    action = app.invoke_later(Server(1), "deploy", "old")
    assert action.concurrency_key == "lane-old"
    assert _key_of(app, action.id, "checksum_key") == "scope-old"
    assert action.checksum == checksum("new")


def test_outbound_option_waits_for_completion(reg: Registry, app: App) -> None:
    """``outbound=True``: after its steps the action stays performing, awaiting completion."""
    reg.action(Server, "provision", outbound=True, steps=[lambda step, s: None])
    action = app.invoke_now(Server(1), "provision")
    drain(app)
    action = app.get(action.id or "")
    assert action.outbound
    assert action.awaiting_completion
    assert action.status is ActionStatus.PERFORMING


@pytest.mark.parametrize("timeout", [5, "timeout_of"], ids=["seconds", "method"])
def test_timeout_option(reg: Registry, app: App, timeout: float | str) -> None:
    """``timeout`` is seconds or an actor method name returning seconds."""
    reg.action(Server, "slow", timeout=timeout, steps=[lambda step, s: step.wait(60)])
    action = app.invoke_now(Server(1), "slow")
    drain(app)
    action = app.get(action.id or "")
    assert action.status is ActionStatus.TIMED_OUT
    assert action.started_at is not None
    assert action.finished_at == action.started_at + 5


def test_prepend_step_on_subclass_only(reg: Registry, app: App) -> None:
    """``Registry.prepend_step`` on a subclass adds a first step for that subclass only."""
    reg.action(Server, "deploy", steps=[lambda step, s: None])
    reg.prepend_step(SubServer, "deploy", lambda step, s: None, step_name="warm_up")
    sub = app.invoke_now(SubServer(1), "deploy")
    base = app.invoke_now(Server(2), "deploy")
    assert [s.name for s in sub.steps] == ["warm_up", "<lambda>"]
    assert [s.name for s in base.steps] == ["<lambda>"]
    assert sub.status is base.status is ActionStatus.SUCCEEDED


def test_lookup_walks_class_hierarchy(reg: Registry, app: App, fleet: Fleet) -> None:
    """An action defined on a base class is usable on an instance of a subclass."""
    reg.action(Server, "ping")
    action = app.invoke_now(fleet.get(9, SubServer), "ping", 1)
    assert action.status is ActionStatus.SUCCEEDED
    assert action.actor_type == "SubServer"
    assert fleet.get(9, SubServer).calls == [("ping", (1,))]


def test_plain_str_actor() -> None:
    """``str`` actors work without registration; the key is the string itself."""
    reg = Registry()
    seen: list[str] = []
    reg.action(str, "shout", steps=[lambda step, word: seen.append(word.upper())])
    app = memory_app(reg)
    action = app.invoke_now("hello", "shout")
    assert (action.status, action.actor_type, action.actor_key) == (
        ActionStatus.SUCCEEDED,
        "str",
        "hello",
    )
    assert seen == ["HELLO"]


def test_plain_int_actor() -> None:
    """``int`` actors work without registration and load back as ints."""
    reg = Registry()
    reg.action(int, "bit_length")
    app = memory_app(reg)
    action = app.invoke_now(255, "bit_length")
    assert (action.status, action.actor_type, action.actor_key) == (
        ActionStatus.SUCCEEDED,
        "int",
        "255",
    )


def test_steps_added_after_a_first_run_apply_to_later_invocations(reg: Registry, app: App) -> None:
    """The registry caches resolved actions, but a step added (or a subclass step
    prepended) after an invocation is seen by the next one."""
    ran: list[str] = []
    flow = reg.action(Server, "flow", steps=[lambda step, s: ran.append("one")])
    app.invoke_now(Server(1), "flow")
    flow.step(lambda step, s: ran.append("two"), name="two")
    reg.prepend_step(SubServer, "flow", lambda step, s: ran.append("zero"), step_name="zero")
    app.invoke_now(Server(2), "flow")
    app.invoke_now(SubServer(3), "flow")
    assert ran == ["one", "one", "two", "zero", "one", "two"]
