"""The pure kernel: records, events, lifecycle tables, ``decide`` and checksums.

Only the standard library, attrs and transitions are imported here.
"""

from stepkernel.domain.checksum import canonical_json, checksum
from stepkernel.domain.kernel import decide
from stepkernel.domain.view import Decision, View

__all__ = ["Decision", "View", "canonical_json", "checksum", "decide"]
