"""Reading queued messages back from stored text (the SQL and Redis stores).

A message whose text does not decode cannot wake anything: inspection and the recovery
sweep (``queued``) leave it out, and the next lease that picks it moves it to the dead
letters (see :class:`~stepkernel.ports.store.DeadLetter`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from stepkernel.domain.encoding import decode_message
from stepkernel.domain.errors import CorruptRecordError
from stepkernel.domain.messages import Message

__all__ = ["decodable", "message_or_reason"]

log = logging.getLogger(__name__)


def message_or_reason(message_id: str, text: Any) -> Message | str:
    """The message stored as *text*, or -- when it does not decode -- why not, as a dead
    letter records it (what every text-storing store's ``lease`` and ``queued`` need)."""
    try:
        return decode_message(message_id, text)
    except CorruptRecordError as error:
        return str(error.fields.get("reason") or error)


def decodable(rows: Iterable[Sequence[Any]]) -> list[Message]:
    """The messages of *rows* (``(id, stored text)``) that decode, in order; each one
    that does not is logged and left out."""
    out: list[Message] = []
    for message_id, text in rows:
        found = message_or_reason(message_id, text)
        if isinstance(found, str):
            log.warning("queued message %s does not decode (%s)", message_id, found)
        else:
            out.append(found)
    return out
