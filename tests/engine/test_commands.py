"""The command codec: every command round-trips; any other bytes are a clear InvalidInputError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semcache import InvalidInputError
from semcache._engine.commands import CODEC_VERSION, Clear, Delete, Evict, Expire, Put, decode_command, encode_command

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)  # no lone surrogates: not UTF-8
i64 = st.integers(-(2**63), 2**63 - 1)
commands = st.one_of(
    st.builds(Put, text, st.binary(max_size=64), text, st.none() | st.binary(max_size=64), i64, i64),
    st.builds(Delete, text),
    st.builds(Clear, text),
    st.builds(Expire, i64),
    st.builds(Evict, st.lists(text, max_size=5).map(tuple)),
)


@given(commands)
@settings(max_examples=300, deadline=None)
def test_every_command_round_trips(command):
    assert decode_command(encode_command(command)) == command


@given(st.binary(max_size=80))
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_decode_or_raise_invalid_input(data):
    try:
        command = decode_command(data)
    except InvalidInputError:
        return
    assert encode_command(command) == data  # anything accepted is a canonical encoding


@given(commands, st.data())
@settings(max_examples=200, deadline=None)
def test_a_truncated_record_is_refused(command, data):
    encoded = encode_command(command)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(InvalidInputError):
        decode_command(encoded[:cut])


def test_specific_malformed_records():
    put = encode_command(Put("k", b"v", "", None, 1, 2))
    cases = {
        "unknown command codec version 9": bytes([9]) + put[1:],
        "unknown command tag 77": bytes([CODEC_VERSION, 77]),
        "trailing bytes": put + b"\x00",
        "not valid UTF-8": bytes([CODEC_VERSION, 2]) + struct.pack("<I", 2) + b"\xff\xfe",
        "truncated": put[:-3],
    }
    for message, data in cases.items():
        with pytest.raises(InvalidInputError, match=message):
            decode_command(data)


def test_a_put_with_an_unknown_vector_flag_is_refused():
    """Regression: any flag byte but 1 used to mean "no vector", so two encodings decoded alike."""
    put = bytearray(encode_command(Put("k", b"v", "", None, 1, 2)))
    flag_at = 2 + (4 + 1) + (4 + 1) + 4  # header, key, value, scope
    assert put[flag_at] == 0
    put[flag_at] = 2
    with pytest.raises(InvalidInputError, match="bad vector flag"):
        decode_command(bytes(put))
