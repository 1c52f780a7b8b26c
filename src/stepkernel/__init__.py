"""stepkernel: durable, multi-step workflows shaped as trees of actions."""

from stepkernel.domain.checksum import canonical_json, checksum
from stepkernel.domain.errors import (
    ActionFinishedError,
    ActionNotFoundError,
    ChecksumInputError,
    CompletionConflictError,
    CompletionError,
    ConflictError,
    CorruptRecordError,
    DefinitionError,
    IllegalTransitionError,
    InvalidInputError,
    NotOutboundError,
    ReplayDivergenceError,
    ResolverError,
    StepkernelError,
    StoreError,
    StoreUnavailableError,
    UnknownActionError,
    UnknownActorError,
    UnserializableArgumentsError,
)
from stepkernel.domain.records import ErrorInfo
from stepkernel.domain.status import ActionStatus, StepStatus
from stepkernel.runtime.app import App
from stepkernel.runtime.policy import RetryPolicy
from stepkernel.runtime.registry import ActionDefinition, Registry
from stepkernel.runtime.snapshot import Action, ActionTree, Step
from stepkernel.runtime.worker import Worker
from stepkernel.wiring import open_app, open_store

__all__ = [
    "Action",
    "ActionDefinition",
    "ActionFinishedError",
    "ActionNotFoundError",
    "ActionStatus",
    "ActionTree",
    "App",
    "ChecksumInputError",
    "CompletionConflictError",
    "CompletionError",
    "ConflictError",
    "CorruptRecordError",
    "DefinitionError",
    "ErrorInfo",
    "IllegalTransitionError",
    "InvalidInputError",
    "NotOutboundError",
    "Registry",
    "ReplayDivergenceError",
    "ResolverError",
    "RetryPolicy",
    "Step",
    "StepStatus",
    "StepkernelError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownActionError",
    "UnknownActorError",
    "UnserializableArgumentsError",
    "Worker",
    "canonical_json",
    "checksum",
    "open_app",
    "open_store",
]
