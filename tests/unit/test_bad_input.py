"""Bad input: unknown names, unregistered actors, unserializable arguments, resolvers
returning the wrong type, bad fan-out in a step body."""

from __future__ import annotations

from typing import Any

import pytest
from actors import Server, records

from stepkernel import (
    ActionStatus,
    App,
    DefinitionError,
    Registry,
    ResolverError,
    UnknownActionError,
    UnknownActorError,
    UnserializableArgumentsError,
)
from stepkernel.testing import drain


class Stranger:
    """An actor type nobody registered."""

    id = 1


def test_unknown_action_raises_at_invoke(reg: Registry, app: App) -> None:
    """Invoking an undefined action raises UnknownActionError and stores nothing."""
    with pytest.raises(UnknownActionError):
        app.invoke_later(Server(1), "nope")
    assert records(app) == {}


def test_unregistered_actor_raises_at_invoke(reg: Registry, app: App) -> None:
    """Invoking on an unregistered actor type raises UnknownActorError."""
    with pytest.raises(UnknownActorError):
        app.invoke_now(Stranger(), "ping")
    assert records(app) == {}


def test_action_on_unregistered_actor_type_refused(reg: Registry) -> None:
    """Defining an action on an unregistered actor type raises UnknownActorError."""
    with pytest.raises(UnknownActorError):
        reg.action(Stranger, "ping")


@pytest.mark.parametrize("argument", [{1, 2}, object(), float("nan")], ids=["set", "object", "nan"])
def test_unserializable_arguments_refused(reg: Registry, app: App, argument: Any) -> None:
    """Arguments that are not canonical JSON raise UnserializableArgumentsError; nothing
    is stored or queued."""
    reg.action(Server, "deploy", steps=[lambda step, s, a: None])
    with pytest.raises(UnserializableArgumentsError):
        app.invoke_later(Server(1), "deploy", argument)
    assert records(app) == {}
    assert app.store.queued() == []


def test_unserializable_arguments_from_before_hook_refused(reg: Registry, app: App) -> None:
    """Arguments a before hook replaces are checked too."""
    deploy = reg.action(Server, "deploy", steps=[lambda step, s, a: None])
    deploy.before(lambda action, s, a: setattr(action, "arguments", [{1}]))
    with pytest.raises(UnserializableArgumentsError):
        app.invoke_later(Server(1), "deploy", 1)
    assert records(app) == {}


@pytest.mark.parametrize("option", ["concurrency_key", "checksum_key"])
def test_resolver_returning_non_string(reg: Registry, app: App, option: str) -> None:
    """A key resolver returning a non-string (42) raises ResolverError; nothing stored."""
    options: dict[str, Any] = {option: lambda s: 42}
    reg.action(Server, "deploy", steps=[lambda step, s: None], **options)
    with pytest.raises(ResolverError):
        app.invoke_later(Server(1), "deploy")
    assert records(app) == {}


def test_resolver_list_with_non_string_part(reg: Registry, app: App) -> None:
    """A key resolver returning a list with a non-string part raises ResolverError."""
    reg.action(Server, "deploy", steps=[lambda step, s: None], concurrency_key=lambda s: ["a", 1])
    with pytest.raises(ResolverError):
        app.invoke_later(Server(1), "deploy")


def test_resolver_naming_missing_method(reg: Registry, app: App) -> None:
    """A resolver naming a method the actor lacks raises ResolverError at invoke."""
    reg.action(Server, "deploy", steps=[lambda step, s: None], concurrency_key="no_such")
    with pytest.raises(ResolverError):
        app.invoke_later(Server(1), "deploy")


def test_resolver_option_must_be_callable_or_name(reg: Registry) -> None:
    """A resolver option that is neither callable nor a method name is refused at
    definition time."""
    with pytest.raises(DefinitionError):
        reg.action(Server, "deploy", concurrency_key=42)  # type: ignore[arg-type]


def test_step_do_unknown_action_fails_step(reg: Registry, app: App) -> None:
    """``step.do`` of an unknown action fails the step with the error recorded, without
    retrying."""
    calls: list[int] = []

    def body(step: Any, s: Server) -> None:
        calls.append(1)
        step.do("nope")

    reg.action(Server, "deploy", steps=[body])
    action = app.invoke_now(Server(1), "deploy")
    drain(app)
    final = app.get(action.id or "")
    assert final.status is ActionStatus.FAILED
    error = final.steps[0].error
    assert error is not None
    assert error.type == "UnknownActionError"
    assert calls == [1]


def test_step_do_unserializable_arguments_fails_step(reg: Registry, app: App) -> None:
    """``step.do`` with unserializable arguments fails the step, without retrying."""
    reg.action(Server, "ping", steps=[lambda step, s, a: None])
    reg.action(Server, "deploy", steps=[lambda step, s: step.do("ping", {1, 2})])
    action = app.invoke_now(Server(1), "deploy")
    drain(app)
    final = app.get(action.id or "")
    assert final.status is ActionStatus.FAILED
    assert final.steps[0].error is not None
    assert final.steps[0].error.type == "UnserializableArgumentsError"
    assert final.steps[0].attempt == 0


def test_step_on_set_of_actors_fails_step(reg: Registry, app: App) -> None:
    """``step.on`` with a set of actors (unordered) fails the step."""
    reg.action(Server, "ping", steps=[lambda step, s: None])
    reg.action(Server, "deploy", steps=[lambda step, s: step.on({"a", "b"}, "ping")])
    action = app.invoke_now(Server(1), "deploy")
    drain(app)
    assert app.get(action.id or "").status is ActionStatus.FAILED


def test_step_child_resolver_error_fails_step(reg: Registry, app: App) -> None:
    """A child whose key resolver returns a non-string fails the parent step."""
    reg.action(Server, "ping", steps=[lambda step, s: None], concurrency_key=lambda s: 42)
    reg.action(Server, "deploy", steps=[lambda step, s: step.do("ping")])
    action = app.invoke_now(Server(1), "deploy")
    drain(app)
    final = app.get(action.id or "")
    assert final.status is ActionStatus.FAILED
    assert final.steps[0].error is not None
    assert final.steps[0].error.type == "ResolverError"


def test_wait_with_negative_seconds_fails_step(reg: Registry, app: App) -> None:
    """``step.wait`` with a negative duration fails the step."""
    reg.action(Server, "deploy", steps=[lambda step, s: step.wait(-1)])
    action = app.invoke_now(Server(1), "deploy")
    drain(app)
    assert app.get(action.id or "").status is ActionStatus.FAILED
