"""Dead letters in Redis: queued messages that do not decode, moved out of the queue.

``{p}:dead`` is a hash: message id -> a JSON object with the message's ``action`` id,
its stored text ``data``, the ``reason``, ``at`` (store time of the move, as the text the
store sent: exact) and ``deliveries``.  :data:`MOVE` moves messages there atomically,
each only while its stored text is still the text the lease saw: a late move (its worker
stalled while another moved the message and the recovery sweep queued a fresh one under
the same id) changes nothing.  See :class:`~stepkernel.ports.store.DeadLetter`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from stepkernel.adapters.redis.scripts import ACK_LUA, PRELUDE, Script, reply_text
from stepkernel.ports.store import DeadLetter

__all__ = ["DROP", "LIST", "MOVE", "parse"]

MOVE = Script(
    "dead_move",
    PRELUDE
    + ACK_LUA
    + """
-- ARGV[3]: now; then triples of (message id, reason, stored text seen).
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  local state = redis.call('HMGET', p .. 'm:' .. id, 'd', 'a', 'n')
  if state[1] and state[1] == ARGV[i + 2] then
    local letter = cjson.encode({
      action = state[2], data = state[1], reason = ARGV[i + 1],
      at = ARGV[3], deliveries = tonumber(state[3] or '0')
    })
    redis.call('HSET', p .. 'dead', id, letter)
    ack(id)
  end
end
return 0
""",
)

LIST = Script(
    "dead_list",
    PRELUDE
    + """
return redis.call('HGETALL', p .. 'dead')
""",
)

DROP = Script(
    "dead_drop",
    PRELUDE
    + """
-- ARGV[3..]: message ids.  Returns how many were there.
local found = 0
for i = 3, #ARGV do found = found + redis.call('HDEL', p .. 'dead', ARGV[i]) end
return found
""",
)


def parse(reply: Sequence[Any]) -> list[DeadLetter]:
    """:data:`LIST`'s reply as dead letters, oldest first, then by id."""
    letters = []
    for i in range(0, len(reply), 2):
        message_id = reply_text(reply[i])
        fields = json.loads(reply_text(reply[i + 1]))
        letters.append(
            DeadLetter(
                message_id=message_id,
                action_id=fields.get("action"),
                data=str(fields["data"]),
                reason=str(fields["reason"]),
                dead_at=float(fields["at"]),
                deliveries=int(fields["deliveries"]),
            )
        )
    letters.sort(key=lambda letter: (letter.dead_at, letter.message_id))
    return letters
