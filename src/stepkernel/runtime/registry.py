"""The registry: actor types and the actions defined on them.

Registration is explicit (no globals, no import-time side effects) and validated
eagerly: a bad option fails at definition time with a :class:`DefinitionError`, not when
the first action runs.  Lookup walks the actor's class hierarchy, so an action defined
on ``Car`` is available on ``SportsCar``; ``prepend_step`` on a subclass adds a step for
that subclass only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from attrs import define, field, frozen

from stepkernel.domain.errors import DefinitionError, UnknownActionError, UnknownActorError
from stepkernel.domain.status import CALLBACK_STATUSES, ActionStatus
from stepkernel.runtime.policy import RetryPolicy

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

Resolver = Callable[..., Any] | str
"""A key/checksum/timeout resolver: a callable ``(actor, *arguments)`` or the name of an
actor method called with ``(*arguments)``."""


@frozen
class ActorType:
    """How the app turns an actor into a key and back."""

    cls: type
    name: str
    key: Callable[[Any], str]
    load: Callable[[str], Any]


@frozen
class StepDef:
    """One step: its name (recorded) and its body ``(step, actor, *arguments)``."""

    name: str
    fn: Callable[..., Any]


def _check_resolver(option: str, value: object) -> None:
    if value is None or callable(value):
        return
    if isinstance(value, str) and value.isidentifier():
        return
    raise DefinitionError(
        f"{option} must be a callable or an actor method name, got {value!r}", option=option
    )


@define
class ActionDefinition:
    """An action on an actor type, built with keyword options and decorators.

    ``steps`` run in order; an action without steps gets one step that calls the actor's
    method of the same name.  ``job`` makes the action job-backed (outbound; the job
    receives a :class:`~stepkernel.runtime.handles.JobHandle` and completes it).
    """

    actor: type
    name: str
    steps: list[StepDef] = field(factory=list)
    before_hooks: list[Callable[..., Any]] = field(factory=list)
    callbacks: dict[ActionStatus, list[Callable[..., Any]]] = field(factory=dict)
    concurrency_key: Resolver | None = None
    checksum: Resolver | None = None
    checksum_key: Resolver | None = None
    outbound: bool = False
    timeout: float | str | None = None
    job: Callable[..., Any] | None = None
    retry: RetryPolicy | None = None
    _listeners: list[Callable[[], None]] = field(factory=list, repr=False, eq=False)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def __attrs_post_init__(self) -> None:
        if not self.name.isidentifier():
            raise DefinitionError(f"action name {self.name!r} is not an identifier", name=self.name)
        for option in ("concurrency_key", "checksum", "checksum_key"):
            _check_resolver(option, getattr(self, option))
        if self.timeout is not None and not isinstance(self.timeout, str):
            if isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float):
                raise DefinitionError(
                    f"timeout must be seconds or a method name, got {self.timeout!r}"
                )
            if not self.timeout > 0:
                raise DefinitionError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        elif isinstance(self.timeout, str):
            _check_resolver("timeout", self.timeout)
        if self.job is not None and not callable(self.job):
            raise DefinitionError(f"job must be callable, got {self.job!r}")
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise DefinitionError("retry must be a RetryPolicy")

    # -- decorators ------------------------------------------------------------------------

    @overload
    def step(self, fn: F, *, name: str | None = None) -> F: ...
    @overload
    def step(self, *, name: str | None = None) -> Callable[[F], F]: ...
    def step(self, fn: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
        """Append a step ``fn(step, actor, *arguments)``; usable as ``@definition.step``."""

        def register(body: F) -> F:
            if not callable(body):
                raise DefinitionError(f"a step must be callable, got {body!r}")
            step_name = str(name or getattr(body, "__name__", f"step{len(self.steps)}"))
            self.steps.append(StepDef(name=step_name, fn=body))
            self._changed()
            return body

        return register(fn) if fn is not None else register

    def before(self, fn: F) -> F:
        """Register a before hook ``fn(action, actor, *arguments)`` (runs before any
        record exists; may replace ``action.arguments``, ``cancel()`` or ``complete()``)."""
        if not callable(fn):
            raise DefinitionError(f"a before hook must be callable, got {fn!r}")
        self.before_hooks.append(fn)
        self._changed()
        return fn

    def after(self, *statuses: str | ActionStatus) -> Callable[[F], F]:
        """Register an after callback ``fn(action, actor, *arguments)`` for *statuses*
        (``"succeeded"``, ``"failed"``, ``"cancelled"``, ``"timed_out"`` or ``"all"``)."""
        resolved = _callback_statuses(statuses)

        def register(fn: F) -> F:
            if not callable(fn):
                raise DefinitionError(f"a callback must be callable, got {fn!r}")
            for status in resolved:
                self.callbacks.setdefault(status, []).append(fn)
            self._changed()
            return fn

        return register


def _callback_statuses(statuses: Iterable[str | ActionStatus]) -> tuple[ActionStatus, ...]:
    out: list[ActionStatus] = []
    for status in statuses or ("all",):
        if status == "all":
            out.extend(CALLBACK_STATUSES)
            continue
        try:
            value = ActionStatus(status)
        except ValueError:
            raise DefinitionError(f"no callbacks for status {status!r}") from None
        if value not in CALLBACK_STATUSES:
            raise DefinitionError(f"no callbacks for status {status!r}")
        out.append(value)
    return tuple(dict.fromkeys(out))


@frozen
class ResolvedAction:
    """An action as it applies to one concrete actor class (inheritance resolved)."""

    actor_type: ActorType
    definition: ActionDefinition
    steps: tuple[StepDef, ...]

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def outbound(self) -> bool:
        return self.definition.outbound or self.definition.job is not None

    def callbacks_for(self, status: ActionStatus) -> list[Callable[..., Any]]:
        return list(self.definition.callbacks.get(status, ()))


class Registry:
    """Actor types and action definitions.  Plain ``str`` and ``int`` actors work
    without registration (their key is the value itself)."""

    def __init__(self) -> None:
        self._actors: dict[type, ActorType] = {}
        self._actors_by_name: dict[str, ActorType] = {}
        self._actions: dict[tuple[type, str], ActionDefinition] = {}
        self._resolved: dict[tuple[type, str], ResolvedAction] = {}
        self._prepends: dict[tuple[type, str], list[StepDef]] = {}
        self._pending_callbacks: dict[
            tuple[type, str], list[tuple[tuple[ActionStatus, ...], Callable[..., Any]]]
        ] = {}
        self.register_actor(str, name="str", key=str, load=str)
        self.register_actor(int, name="int", key=str, load=int)

    # -- actors ----------------------------------------------------------------------------

    def register_actor(
        self,
        cls: type,
        *,
        name: str | None = None,
        key: Callable[[Any], Any] | None = None,
        load: Callable[[str], Any] | None = None,
    ) -> ActorType:
        """Register how actors of *cls* become a key and load back.  By default the key
        is ``str(actor.id)`` and loading calls ``cls.load(key)`` if it exists."""
        type_name = name or cls.__qualname__
        if type_name in self._actors_by_name and self._actors_by_name[type_name].cls is not cls:
            raise DefinitionError(f"actor type name {type_name!r} is already registered")
        key_fn = key if key is not None else _default_key
        if load is not None:
            load_fn = load
        elif callable(getattr(cls, "load", None)):
            load_fn = getattr(cls, "load")  # noqa: B009 - a class attribute mypy cannot see
        else:
            raise DefinitionError(
                f"actor type {type_name} needs load= (or a classmethod load(key))",
                actor_type=type_name,
            )
        actor_type = ActorType(cls=cls, name=type_name, key=lambda a: str(key_fn(a)), load=load_fn)
        self._actors[cls] = actor_type
        self._resolved.clear()
        self._actors_by_name[type_name] = actor_type
        return actor_type

    @overload
    def actor(self, cls: C) -> C: ...
    @overload
    def actor(
        self,
        *,
        name: str | None = None,
        key: Callable[[Any], Any] | None = None,
        load: Callable[[str], Any] | None = None,
    ) -> Callable[[C], C]: ...
    def actor(
        self,
        cls: C | None = None,
        *,
        name: str | None = None,
        key: Callable[[Any], Any] | None = None,
        load: Callable[[str], Any] | None = None,
    ) -> C | Callable[[C], C]:
        """Class decorator form of :meth:`register_actor`."""

        def register(klass: C) -> C:
            self.register_actor(klass, name=name, key=key, load=load)
            return klass

        return register(cls) if cls is not None else register

    def actor_type_of(self, actor: Any) -> ActorType:
        """The registered type of *actor* (nearest registered class in its MRO)."""
        for klass in type(actor).__mro__:
            found = self._actors.get(klass)
            if found is not None:
                return found
        raise UnknownActorError(
            f"actor type {type(actor).__qualname__} is not registered",
            actor_type=type(actor).__qualname__,
        )

    def actor_type_named(self, name: str) -> ActorType:
        try:
            return self._actors_by_name[name]
        except KeyError:
            raise UnknownActorError(f"no actor type named {name!r}", actor_type=name) from None

    def load_actor(self, type_name: str, key: str) -> Any:
        """Load an actor back from its stored type name and key."""
        actor_type = self.actor_type_named(type_name)
        try:
            actor = actor_type.load(key)
        except (LookupError, ValueError) as exc:
            raise UnknownActorError(
                f"actor {type_name}/{key} cannot be loaded: {exc}", actor_type=type_name, key=key
            ) from exc
        if actor is None:
            raise UnknownActorError(
                f"actor {type_name}/{key} not found", actor_type=type_name, key=key
            )
        return actor

    # -- actions ---------------------------------------------------------------------------

    def action(
        self,
        actor: type,
        name: str,
        *,
        steps: Iterable[Callable[..., Any]] = (),
        before: Callable[..., Any] | None = None,
        concurrency_key: Resolver | None = None,
        checksum: Resolver | None = None,
        checksum_key: Resolver | None = None,
        outbound: bool = False,
        timeout: float | str | None = None,
        job: Callable[..., Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> ActionDefinition:
        """Define action *name* on actor type *actor* (which must be registered)."""
        if actor not in self._actors:
            raise UnknownActorError(
                f"register actor type {actor.__qualname__} before defining actions on it",
                actor_type=actor.__qualname__,
            )
        if (actor, name) in self._actions:
            raise DefinitionError(f"{actor.__qualname__}.{name} is already defined", name=name)
        definition = ActionDefinition(
            actor=actor,
            name=name,
            concurrency_key=concurrency_key,
            checksum=checksum,
            checksum_key=checksum_key,
            outbound=outbound,
            timeout=timeout,
            job=job,
            retry=retry,
        )
        for fn in steps:
            definition.step(fn)
        if before is not None:
            definition.before(before)
        for statuses, fn in self._pending_callbacks.pop((actor, name), []):
            definition.after(*statuses)(fn)
        self._actions[(actor, name)] = definition
        definition._listeners.append(self._resolved.clear)
        self._resolved.clear()
        return definition

    def after(self, actor: type, name: str, *statuses: str | ActionStatus) -> Callable[[F], F]:
        """Attach an after callback to ``actor.name`` from anywhere (even before the action
        is defined: it is attached when it is)."""
        resolved = _callback_statuses(statuses)

        def register(fn: F) -> F:
            definition = self._actions.get((actor, name))
            if definition is None:
                self._pending_callbacks.setdefault((actor, name), []).append((resolved, fn))
            else:
                definition.after(*resolved)(fn)
            return fn

        return register

    def prepend_step(
        self,
        actor: type,
        name: str,
        fn: Callable[..., Any] | None = None,
        *,
        step_name: str | None = None,
    ) -> Any:
        """Run *fn* before the steps of ``name`` for actors of *actor* (and subclasses)
        only; the class that defines the action is not changed.  Usable as a decorator."""

        def register(body: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(body):
                raise DefinitionError(f"a step must be callable, got {body!r}")
            self._resolved.clear()
            self._prepends.setdefault((actor, name), []).insert(
                0, StepDef(name=str(step_name or getattr(body, "__name__", "prepended")), fn=body)
            )
            return body

        return register(fn) if fn is not None else register

    def resolve(self, actor_type: ActorType, name: str) -> ResolvedAction:
        """The action *name* for actors of *actor_type*, walking the class hierarchy.

        Cached until the registry or one of its definitions changes.
        """
        cached = self._resolved.get((actor_type.cls, name))
        if cached is not None and cached.actor_type is actor_type:
            return cached
        resolved = self._resolve(actor_type, name)
        self._resolved[(actor_type.cls, name)] = resolved
        return resolved

    def _resolve(self, actor_type: ActorType, name: str) -> ResolvedAction:
        definition = None
        prepended: list[StepDef] = []
        for klass in actor_type.cls.__mro__:
            prepended.extend(self._prepends.get((klass, name), ()))
            definition = self._actions.get((klass, name))
            if definition is not None:
                break
        if definition is None:
            raise UnknownActionError(
                f"no action {name!r} on {actor_type.name}", actor_type=actor_type.name, name=name
            )
        steps = list(definition.steps)
        if definition.job is not None:
            steps.append(StepDef(name="job", fn=definition.job))
        elif not steps:
            steps.append(StepDef(name=name, fn=_method_step(name)))
        return ResolvedAction(
            actor_type=actor_type, definition=definition, steps=(*prepended, *steps)
        )

    def resolve_for(self, actor: Any, name: str) -> ResolvedAction:
        return self.resolve(self.actor_type_of(actor), name)

    def definitions(self) -> list[ActionDefinition]:
        return list(self._actions.values())


def _default_key(actor: Any) -> Any:
    try:
        return actor.id
    except AttributeError:
        raise UnknownActorError(
            f"{type(actor).__qualname__} has no .id; register it with key=",
            actor_type=type(actor).__qualname__,
        ) from None


def _method_step(name: str) -> Callable[..., Any]:
    def call_method(step: Any, actor: Any, *arguments: Any) -> Any:
        method = getattr(actor, name, None)
        if method is None or not callable(method):
            raise UnknownActionError(
                f"{type(actor).__qualname__} has no method {name!r} for its stepless action",
                name=name,
            )
        return method(*arguments)

    call_method.__name__ = name
    return call_method


def is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)
