"""Turning an invocation into a kernel :class:`ActionSpec`: run the before hooks and the
key, checksum and timeout resolvers (user code, outside any transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stepkernel.domain.checksum import checksum as checksum_of
from stepkernel.domain.errors import ResolverError
from stepkernel.domain.events import ActionSpec, ShortCircuit
from stepkernel.ports.codec import ArgumentCodec
from stepkernel.runtime.calls import call_user
from stepkernel.runtime.handles import BeforeHandle
from stepkernel.runtime.registry import Registry, ResolvedAction, Resolver


def _call_resolver(resolver: Resolver, actor: Any, arguments: Sequence[Any]) -> Any:
    if isinstance(resolver, str):
        method = getattr(actor, resolver, None)
        if method is None or not callable(method):
            raise ResolverError(
                f"{type(actor).__qualname__} has no method {resolver!r}", resolver=resolver
            )
        return call_user(method, *arguments)
    return call_user(resolver, actor, *arguments)


def resolve_key(
    option: str, resolver: Resolver | None, actor: Any, arguments: Sequence[Any], default: str
) -> str:
    """A concurrency or checksum key: a string, or a list of strings joined with ``/``;
    a blank result means *default*.  Anything else is a :class:`ResolverError`."""
    if resolver is None:
        return default
    value = _call_resolver(resolver, actor, arguments)
    if value is None:
        return default
    if isinstance(value, list | tuple):
        if not all(isinstance(part, str) for part in value):
            raise ResolverError(
                f"{option} returned a list with non-string parts: {value!r}", option=option
            )
        value = "/".join(value)
    if not isinstance(value, str):
        raise ResolverError(
            f"{option} must return a string or a list of strings, got {type(value).__name__}",
            option=option,
        )
    return value if value.strip() else default


def resolve_timeout(resolved: ResolvedAction, actor: Any, arguments: Sequence[Any]) -> float | None:
    timeout = resolved.definition.timeout
    if timeout is None:
        return None
    if isinstance(timeout, str):
        value = _call_resolver(timeout, actor, arguments)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ResolverError(f"timeout resolver returned {value!r}; need seconds > 0")
        return float(value)
    return float(timeout)


def prepare(
    registry: Registry,
    codec: ArgumentCodec,
    actor: Any,
    name: str,
    arguments: Sequence[Any],
    *,
    action_id: str,
) -> ActionSpec | ShortCircuit:
    """Resolve everything user-defined about invoking *name* on *actor*."""
    actor_type = registry.actor_type_of(actor)
    resolved = registry.resolve(actor_type, name)
    original = list(arguments)
    codec.encode(original)
    handle = BeforeHandle(name=name, actor=actor, arguments=list(original))
    for hook in resolved.definition.before_hooks:
        call_user(hook, handle, actor, *handle.arguments)
        if handle.short_circuit is not None:
            return ShortCircuit(status=handle.short_circuit, name=name)
    final = list(handle.arguments)
    encoded = codec.encode(final)
    actor_key = actor_type.key(actor)
    default = f"{actor_type.name}/{actor_key}/{name}"
    definition = resolved.definition
    checksum = None
    if definition.checksum is not None:
        checksum = checksum_of(_call_resolver(definition.checksum, actor, final))
    return ActionSpec(
        id=action_id,
        name=name,
        actor_type=actor_type.name,
        actor_key=actor_key,
        arguments=encoded,
        step_names=tuple(step.name for step in resolved.steps),
        concurrency_key=resolve_key(
            "concurrency_key", definition.concurrency_key, actor, original, default
        ),
        checksum_key=resolve_key("checksum_key", definition.checksum_key, actor, original, default),
        checksum=checksum,
        outbound=resolved.outbound,
        timeout=resolve_timeout(resolved, actor, final),
        after=frozenset(s for s, fns in definition.callbacks.items() if fns),
    )
