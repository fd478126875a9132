"""aesmd's framing and the AESM check against a real unix socket speaking it."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nodeprobe import aesm
from nodeprobe.checks import check_aesm
from tests.nodeprobe.standins import aesmd, answer_keys, send

#: ``Request{getSupportedAttKeyIDNumReq{timeout: 5000}}`` as protoc encodes it: field 21 (key 0xaa 0x01),
#: length 3, field 9 varint (0x48) 5000 (0x88 0x27).
REQUEST_5000 = bytes([0xAA, 0x01, 0x03, 0x48, 0x88, 0x27])


def test_request_is_what_protoc_writes() -> None:
    assert aesm.request(5000) == REQUEST_5000


def test_frame_is_host_order_uint32_length() -> None:
    assert aesm.frame(b"abc") == struct.pack("=I", 3) + b"abc"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (bytes([0xAA, 0x01, 0x04, 0x08, 0x00, 0x10, 0x01]), aesm.AttKeyIDNum(0, 1)),
        (bytes([0xAA, 0x01, 0x02, 0x08, 0x1E]), aesm.AttKeyIDNum(30, 0)),  # no att_key_id_num: 0
        # unknown fields of every wire type are skipped
        (
            bytes([0x0D, 1, 2, 3, 4, 0x11, *range(8), 0xAA, 0x01, 0x04, 0x08, 0x00, 0x10, 0x03]),
            aesm.AttKeyIDNum(0, 3),
        ),
    ],
)
def test_answer_decodes(message: bytes, expected: aesm.AttKeyIDNum) -> None:
    assert aesm.answer(message) == expected


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"", "no GetSupportedAttKeyIDNumResponse"),
        (bytes([0x7A, 0x02, 0x08, 0x00]), "no GetSupportedAttKeyIDNumResponse"),  # another call's answer
        (bytes([0xAA, 0x01, 0x00]), "without an errorCode"),
        (bytes([0xAA, 0x01, 0x09, 0x08]), "truncated length-delimited"),
        (bytes([0xAA]), "truncated varint"),
        (bytes([0x08] + [0xFF] * 11), "longer than 10 bytes"),
        (bytes([0x0B]), "wire type 3"),
        (bytes([0x00, 0x00]), "field number 0"),
        (bytes([0x0D, 1, 2]), "truncated fixed-size"),
    ],
)
def test_malformed_answers_are_refused(message: bytes, error: str) -> None:
    with pytest.raises(aesm.ProtocolError, match=error):
        aesm.answer(message)


def test_the_stand_in_receives_the_request(tmp_path: Path) -> None:
    with aesmd(tmp_path / "aesm.socket", answer_keys(1)) as standin:
        result = check_aesm(str(standin.path), timeout=2)
    assert result.ok, result
    assert standin.received == [aesm.request(2000)]


@pytest.mark.parametrize(
    ("behaviour", "reason", "message"),
    [
        (answer_keys(1), "AESMAnswers", "answers (1 attestation key(s))"),
        (answer_keys(2), "AESMAnswers", "answers (2 attestation key(s))"),
        (answer_keys(0, aesm.AESM_SERVICE_UNAVAILABLE), "AESMQuotingUnavailable", "error 30, 0 key(s)"),
        (answer_keys(0), "AESMQuotingUnavailable", "error 0, 0 key(s)"),
        (lambda request: None, "AESMUnavailable", "closed the connection after 0 of 4 bytes"),
        (send(struct.pack("=I", aesm.MAX_RESPONSE + 1)), "AESMUnavailable", "answer of 65537 bytes"),
        (send(struct.pack("=I", 0)), "AESMUnavailable", "answer of 0 bytes"),
        (send(aesm.frame(b"\x7a\x02\x08\x00")), "AESMUnavailable", "no GetSupportedAttKeyIDNumResponse"),
        (send(struct.pack("=I", 10) + b"\x08"), "AESMUnavailable", "closed the connection after 1 of 10"),
    ],
)
def test_check_aesm(tmp_path: Path, behaviour: object, reason: str, message: str) -> None:
    with aesmd(tmp_path / "aesm.socket", behaviour) as standin:  # type: ignore[arg-type]
        result = check_aesm(str(standin.path), timeout=2)
    assert (result.ok, result.reason) == (reason == "AESMAnswers", reason)
    assert message in result.message
    assert str(tmp_path / "aesm.socket") in result.message


def test_no_socket(tmp_path: Path) -> None:
    result = check_aesm(str(tmp_path / "absent.socket"), timeout=1)
    assert (result.ok, result.reason) == (False, "AESMUnavailable")
    assert "No such file or directory" in result.message


def test_a_socket_nobody_serves_is_refused(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "stale.socket"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: aesmd died
    result = check_aesm(str(path), timeout=1)
    assert (result.ok, result.reason) == (False, "AESMUnavailable")
    assert "Connection refused" in result.message


def test_a_stalling_aesmd_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    """A peer that sends a byte and stops cannot hold the probe past its timeout."""
    with aesmd(tmp_path / "aesm.socket", answer_keys(1), stall=3) as standin:
        result = check_aesm(str(standin.path), timeout=0.3)
    assert (result.ok, result.reason) == (False, "AESMUnavailable")
    assert "timed out" in result.message
