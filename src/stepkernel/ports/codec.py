"""The codec port: how action arguments and completion payloads become stored text."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from stepkernel.domain.checksum import canonical_json


class ArgumentCodec(ABC):
    """Encodes an argument list to text and back.  ``encode`` must raise
    :class:`~stepkernel.UnserializableArgumentsError` (a ``TypeError`` and ``ValueError``)
    for values it cannot represent, before anything is stored; ``decode(encode(x))``
    must equal ``x``."""

    @abstractmethod
    def encode(self, value: Any) -> str:
        """Text for *value*."""

    @abstractmethod
    def decode(self, text: str) -> Any:
        """The value *text* encodes."""


class JsonCodec(ArgumentCodec):
    """Canonical JSON (the default): lists, dicts with string keys, str, int, float, bool,
    None.  Tuples come back as lists; NaN and infinities are refused."""

    def encode(self, value: Any) -> str:
        return canonical_json(value)

    def decode(self, text: str) -> Any:
        return json.loads(text)
