"""What a worker does with a message whose records do not decode: fail the action (or
drop a lane or achievement record) and acknowledge the message, so the worker and the
rest of the tree go on.
"""

from __future__ import annotations

import logging

from stepkernel.domain.encoding import seal
from stepkernel.domain.errors import ConflictError, CorruptRecordError
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ACTION, ActionRecord, Tombstone
from stepkernel.ports.store import Commit, WorkflowStore

log = logging.getLogger("stepkernel")


def quarantine(store: WorkflowStore, exc: CorruptRecordError, message: Message) -> None:
    """A stored record does not decode (*exc* names its key and stored version): replace
    an action's with a failed stand-in (:meth:`ActionRecord.unreadable`), delete a lane's
    or an achievement's, and acknowledge *message* in the same commit.  If the record
    moved meanwhile, only acknowledge."""
    key = tuple(getattr(exc, "key", ("", "")))
    version = getattr(exc, "version", None)
    log.error("message %s: %s", message.id, exc)
    commit = Commit(ack=(message.id,))
    if isinstance(version, int) and len(key) == 2:
        if key[0] == ACTION:
            stand_in = ActionRecord.unreadable(
                str(key[1]), getattr(exc, "reason", str(exc)), store.now()
            )
            commit = Commit(
                writes=(
                    seal(
                        stand_in,
                        version=version + 1,
                        prev_digest="",
                        event_id=f"unreadable:{key[1]}:{version}",
                    ),
                ),
                ack=(message.id,),
            )
        else:
            commit = Commit(
                deletes=(Tombstone(key=(str(key[0]), str(key[1])), version=version),),
                ack=(message.id,),
            )
    try:
        store.commit(commit)
    except ConflictError:
        store.ack((message.id,))
