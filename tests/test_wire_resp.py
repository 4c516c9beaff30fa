"""The RESP codec: commands byte for byte, replies decoded whatever the split."""

from __future__ import annotations

import pytest

from llmgw.wire import ProtocolError
from llmgw.wire.resp import Reply, RespError, RespParser, encode_command


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert encode_command("SET", b"k\r\n", 42) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n42\r\n"


REPLIES = (
    b"+OK\r\n"
    b"-NOSCRIPT No matching script\r\n"
    b":-7\r\n"
    b"$5\r\nhe\r\nl\r\n"
    b"$-1\r\n"
    b"$0\r\n\r\n"
    b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n+b\r\n$-1\r\n"
    b"*0\r\n"
    b"*-1\r\n"
)


def _check(replies: list[Reply]) -> None:
    assert replies[0] == "OK"
    assert isinstance(replies[1], RespError) and replies[1].kind == "NOSCRIPT"
    assert replies[2:] == [-7, b"he\r\nl", None, b"", [1, [b"a", "b"], None], [], None]


def test_every_reply_type_decodes_at_every_split_offset() -> None:
    for cut in range(len(REPLIES) + 1):
        parser = RespParser()
        _check(parser.feed(REPLIES[:cut]) + parser.feed(REPLIES[cut:]))


def test_replies_fed_one_byte_at_a_time() -> None:
    parser = RespParser()
    replies: list[Reply] = []
    for i in range(len(REPLIES)):
        replies += parser.feed(REPLIES[i : i + 1])
    _check(replies)


@pytest.mark.parametrize("data", [b"?what\r\n", b":12x\r\n", b"$abc\r\n", b"$999999999999\r\n"])
def test_malformed_replies_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        RespParser().feed(data)


def test_an_endless_reply_line_is_refused() -> None:
    with pytest.raises(ProtocolError):
        RespParser().feed(b"+" + b"x" * (70 << 10))
