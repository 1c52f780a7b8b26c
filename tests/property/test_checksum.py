"""Checksums and the record encoding: canonical, order-insensitive, type-sensitive, and
tamper-evident."""

from __future__ import annotations

import json
import math
from typing import Any

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from stepkernel import ChecksumInputError, CorruptRecordError, canonical_json, checksum
from stepkernel.domain.encoding import decode_record, encode_record, state_text, verify_digest
from stepkernel.domain.records import Record, key_of
from stepkernel.testing.strategies import json_values, sealed_records


def test_checksum_of_an_integer_is_pinned() -> None:
    """checksum(25) is the SHA-256 of the text '25'."""
    assert checksum(25) == "b7a56873cd771f2c446d369b649430b65a756ba278ff97ec81bb6f55b2e73569"


def test_checksum_of_a_list_is_pinned() -> None:
    """checksum(["a", "b"]) is the SHA-256 of '["a","b"]' (no whitespace)."""
    assert (
        checksum(["a", "b"]) == "0473ef2dc0d324ab659d3580c1134e9d812035905c4781fdd6d529b0c6860e13"
    )


def test_checksum_of_none_is_none() -> None:
    """checksum(None) is None: no checksum, not the checksum of 'null'."""
    assert checksum(None) is None


class _Thing:
    pass


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, [1.0, math.nan], {"a": math.inf}, {1, 2}, _Thing(), b"x"],
    ids=["nan", "inf", "-inf", "nested-nan", "nested-inf", "set", "object", "bytes"],
)
def test_checksum_refuses_non_json(value: Any) -> None:
    """checksum raises ChecksumInputError for NaN, infinities, sets and arbitrary objects."""
    with pytest.raises(ChecksumInputError):
        checksum(value)


@given(json_values())
def test_checksum_equal_for_equal_json_values(value: Any) -> None:
    """A value and its JSON round-tripped copy (a different but equal object) have the
    same checksum."""
    copy = json.loads(json.dumps(value))
    assume(copy == value)  # -0.0 and 0.0 compare equal but encode differently
    assert checksum(copy) == checksum(value)


@given(st.dictionaries(st.text(), json_values(max_leaves=4), min_size=2, max_size=6))
def test_checksum_ignores_dict_key_order(value: dict[str, Any]) -> None:
    """checksum of a dict does not depend on the insertion order of its keys."""
    reversed_order = dict(reversed(list(value.items())))
    assert checksum(reversed_order) == checksum(value)


@given(st.sampled_from([[1, 1.0], [1, True], [1.0, True], [0, False], [0, 0.0]]))
def test_checksum_distinguishes_numbers_and_booleans(pair: list[Any]) -> None:
    """1, 1.0 and True (and 0, 0.0, False) are equal in Python but checksum differently."""
    first, second = pair
    assert checksum(first) != checksum(second)
    assert checksum([first]) != checksum([second])


@given(st.text(alphabet=st.characters(min_codepoint=0x80, codec="utf-8"), min_size=1))
def test_canonical_json_leaves_non_ascii_unescaped(text: str) -> None:
    """canonical_json writes non-ASCII characters as themselves, not \\u escapes."""
    encoded = canonical_json({"k": text})
    assert text in encoded
    assert json.loads(encoded) == {"k": text}


@given(sealed_records())
def test_decode_record_round_trips_encode_record(record: Record) -> None:
    """decode_record(encode_record(r)) rebuilds r exactly, and its digest verifies."""
    decoded = decode_record(key_of(record), encode_record(record))
    assert decoded == record
    verify_digest(decoded)


def _string_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every string leaf of a decoded JSON value."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _string_paths(item, (*path, i))]
    if isinstance(value, dict):
        return [p for k, item in value.items() for p in _string_paths(item, (*path, k))]
    return []


def _append_at(value: Any, path: tuple[Any, ...], suffix: str) -> None:
    for part in path[:-1]:
        value = value[part]
    value[path[-1]] = value[path[-1]] + suffix


@given(sealed_records(), st.data())
def test_decode_record_detects_tampered_text(record: Record, data: st.DataObject) -> None:
    """decode_record raises CorruptRecordError when any string in the stored text was
    changed (state, chain fields or tags alike: nothing escapes the digest)."""
    decoded = json.loads(encode_record(record))
    path = data.draw(st.sampled_from(_string_paths(decoded)), label="tampered path")
    _append_at(decoded, path, "x")
    with pytest.raises(CorruptRecordError):
        decode_record(key_of(record), canonical_json(decoded))


@given(sealed_records())
def test_decode_record_accepts_the_same_json_spaced_out(record: Record) -> None:
    """Stored text that is the same JSON with whitespace (written by another tool)
    decodes to an equal record whose cached state text is the canonical one: the digest
    is checked over the canonical state, not over the bytes as stored."""
    spaced = json.dumps(json.loads(encode_record(record)), ensure_ascii=False, indent=1)
    decoded = decode_record(key_of(record), spaced)
    assert decoded == record
    assert decoded.state_text == state_text(record)


@given(sealed_records())
def test_decode_record_caches_the_stored_state_text(record: Record) -> None:
    """Compact stored text verifies over its own state text, which the decoded record
    keeps: encoding it again reproduces the stored text exactly."""
    text = encode_record(record)
    decoded = decode_record(key_of(record), text)
    assert decoded.state_text is not None
    assert encode_record(decoded) == text


@given(sealed_records(), st.integers(min_value=1, max_value=40))
def test_decode_record_refuses_truncated_text(record: Record, cut: int) -> None:
    """decode_record raises CorruptRecordError for torn (truncated) text."""
    text = encode_record(record)
    with pytest.raises(CorruptRecordError):
        decode_record(key_of(record), text[: max(0, len(text) - cut)])


@given(sealed_records())
def test_decode_record_refuses_a_record_stored_under_another_key(record: Record) -> None:
    """decode_record raises CorruptRecordError when the text names another key."""
    kind, name = key_of(record)
    with pytest.raises(CorruptRecordError) as raised:
        decode_record((kind, name + "-other"), encode_record(record))
    assert raised.value.fields["reason"] == "key mismatch"


@given(sealed_records())
def test_verify_digest_detects_a_forged_version(record: Record) -> None:
    """verify_digest raises when the digest does not match the state (a record evolved
    without being sealed again)."""
    forged = attrs.evolve(record, last_event=record.last_event + "-forged")
    with pytest.raises(CorruptRecordError):
        verify_digest(forged)
