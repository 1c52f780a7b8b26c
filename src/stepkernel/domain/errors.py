"""The error vocabulary of stepkernel, grouped by who has to act.

Every error derives from :class:`StepkernelError`.  Families:

* :class:`DefinitionError` -- the application's registrations are wrong (raised at
  registration or when an unknown action/actor is named).  Fix the code.
* :class:`InvalidInputError` -- a caller handed a bad value (unserializable arguments,
  a resolver returning a non-string, NaN in a checksum).  Fix the call.
* :class:`IllegalTransitionError` -- the kernel was asked for an edge the lifecycle does
  not have.  A bug in stepkernel or a corrupted record.
* :class:`CompletionError` -- an external completion cannot be applied (unknown action,
  finished action, not an outbound action).  Nothing was changed.
* :class:`StoreError` -- the persistence layer: :class:`ConflictError` (retry: the
  runtime does it for you), :class:`CorruptRecordError` (stored bytes do not decode or
  their digest chain is broken), :class:`StoreUnavailableError` (infrastructure fault).
* :class:`ReplayDivergenceError` -- replaying recorded events did not reproduce the
  recorded digests.

Errors carry fields, not only prose, and pickle (``__reduce__`` keeps the fields).
"""

from __future__ import annotations

from typing import Any


class StepkernelError(Exception):
    """Base class of every error stepkernel raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for name, value in fields.items():
            setattr(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields))


def _rebuild(cls: type[StepkernelError], message: str, fields: dict[str, Any]) -> StepkernelError:
    error = cls.__new__(cls)
    StepkernelError.__init__(error, message, **fields)
    return error


# -- definitions -------------------------------------------------------------------------


class DefinitionError(StepkernelError):
    """The registry is inconsistent: fix the application's definitions."""


class UnknownActionError(DefinitionError, LookupError):
    """No action of that name is defined for that actor type (or its bases)."""


class UnknownActorError(DefinitionError, LookupError):
    """The actor's type is not registered, or its key cannot be loaded back."""


class LifecycleDefinitionError(DefinitionError):
    """The lifecycle edges are inconsistent; lists every problem found at once."""


# -- bad input ---------------------------------------------------------------------------


class InvalidInputError(StepkernelError, ValueError):
    """A value handed to stepkernel is not acceptable."""


class UnserializableArgumentsError(InvalidInputError, TypeError):
    """Arguments (or a payload) are not canonical JSON: sets, objects, NaN, infinities."""


class ChecksumInputError(InvalidInputError):
    """A value cannot be checksummed: it is not JSON or holds NaN/infinity."""


class ResolverError(InvalidInputError):
    """A key/checksum/timeout resolver returned a value of the wrong type."""


# -- kernel ------------------------------------------------------------------------------


class IllegalTransitionError(StepkernelError):
    """The lifecycle table has no edge for (status, trigger)."""


class MissingRecordsError(StepkernelError):
    """The kernel needs records the view does not hold (the runtime loads and re-decides).

    ``keys`` lists the record keys to load.
    """

    keys: tuple[tuple[str, str], ...]


# -- completion / commands from outside ----------------------------------------------------


class CompletionError(StepkernelError, ValueError):
    """An outside command could not be applied; nothing was changed."""


class ActionNotFoundError(CompletionError, LookupError):
    """No action with that id (or no current outbound action for that actor and name)."""


class ActionFinishedError(CompletionError):
    """The action already reached a terminal status."""


class NotOutboundError(CompletionError):
    """Only outbound (or job-backed) actions can be completed from outside."""


class CompletionConflictError(CompletionError):
    """A different completion was already received for this action (the first one wins;
    sending the same one again is a no-op, not this error)."""


# -- store -------------------------------------------------------------------------------


class StoreError(StepkernelError):
    """Base of persistence errors; adapters translate driver errors into these."""


class ConflictError(StoreError):
    """A record moved since it was read (optimistic version check failed).

    Fields: ``key``, ``expected`` and ``actual`` versions.
    """

    retryable = True


class CorruptRecordError(StoreError):
    """Stored bytes do not decode into a record, or the digest chain does not hold."""


class StoreUnavailableError(StoreError):
    """The backend could not be reached or failed; the operation may be retried."""

    retryable = True


class ReplayDivergenceError(StepkernelError):
    """Replaying a recorded history produced a different digest than recorded."""
