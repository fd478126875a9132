"""aesmd's socket protocol, as the SGX libraries speak it, for one request that needs no enclave of ours.

Framing (linux-sgx ``psw/ae/aesm_service/source/core/ipc/SocketTransporter.cpp``, ``IAEMessage.h``): a
``uint32`` length in host byte order, then that many bytes of a serialized protobuf, ``aesm.message.Request``
to aesmd and ``aesm.message.Response`` back (``messages.proto``, proto2, one optional field per call).

The request is ``GetSupportedAttKeyIDNumRequest`` (Request field 21; its only field is ``timeout``, 9, in
ms). aesmd answers ``GetSupportedAttKeyIDNumResponse`` (Response field 21: ``errorCode`` 1, ``att_key_id_num``
2); ``AESMLogicWrapper::get_supported_att_key_id_num`` answers ``AESM_SERVICE_UNAVAILABLE`` when no quoting
key is supported, so the answer also says whether the quoting plugins are loaded.

The protobuf is encoded by hand: the request is two nested length-delimited fields around one varint and
the answer two varints. The ``protobuf`` package would need the ``.proto`` compiled into generated code
we would have to vendor and keep in step with Intel's, to read two integers. The decoder below bounds
everything a hostile or broken peer controls: the answer's size (:data:`MAX_RESPONSE`), varint length,
field lengths.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import Final

#: ``Request.getSupportedAttKeyIDNumReq`` / ``Response.getSupportedAttKeyIDNumRes``.
GET_SUPPORTED_ATT_KEY_ID_NUM: Final = 21
#: ``timeout`` in every ``…Request`` (milliseconds aesmd may spend on it).
TIMEOUT_FIELD: Final = 9
#: ``AESM_SUCCESS`` and ``AESM_SERVICE_UNAVAILABLE`` (linux-sgx ``psw/ae/inc/internal/aesm_error.h``).
AESM_SUCCESS: Final = 0
AESM_SERVICE_UNAVAILABLE: Final = 30
#: Largest answer read: this one is a few bytes; aesmd's largest (a quote) is far below.
MAX_RESPONSE: Final = 64 * 1024
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10


class ProtocolError(ValueError):
    """The peer's answer is not an ``aesm.message.Response`` to our request (malformed, too large, other)."""


@dataclass(frozen=True)
class AttKeyIDNum:
    """``GetSupportedAttKeyIDNumResponse``: aesmd's error code and how many attestation keys it supports."""

    error_code: int
    att_key_id_num: int


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative ``value``."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def request(timeout_ms: int) -> bytes:
    """A serialized ``aesm.message.Request`` holding ``GetSupportedAttKeyIDNumRequest{timeout}``."""
    inner = _key(TIMEOUT_FIELD, _VARINT) + varint(timeout_ms)
    return _key(GET_SUPPORTED_ATT_KEY_ID_NUM, _BYTES) + varint(len(inner)) + inner


def frame(message: bytes) -> bytes:
    """``message`` with its length prefix (``uint32``, host byte order, as SocketTransporter writes it)."""
    return struct.pack("=I", len(message)) + message


def fields(message: bytes) -> dict[int, int | bytes]:
    """The varint and length-delimited fields of one protobuf message (number → value, the last one wins);
    fixed-size fields are skipped. Raises :class:`ProtocolError` on anything malformed."""
    found: dict[int, int | bytes] = {}
    position = 0

    def read_varint() -> int:
        nonlocal position
        value = 0
        for shift in range(0, 7 * _MAX_VARINT_BYTES, 7):
            if position >= len(message):
                raise ProtocolError("truncated varint")
            byte = message[position]
            position += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise ProtocolError("varint longer than 10 bytes")

    while position < len(message):
        key = read_varint()
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtocolError("field number 0")
        if wire == _VARINT:
            found[number] = read_varint()
        elif wire == _BYTES:
            size = read_varint()
            if size > len(message) - position:
                raise ProtocolError("truncated length-delimited field")
            found[number] = message[position : position + size]
            position += size
        elif wire in (_FIXED64, _FIXED32):
            position += 8 if wire == _FIXED64 else 4
            if position > len(message):
                raise ProtocolError("truncated fixed-size field")
        else:
            raise ProtocolError(f"wire type {wire} not used by aesmd")
    return found


def answer(message: bytes) -> AttKeyIDNum:
    """The ``GetSupportedAttKeyIDNumResponse`` in a serialized ``aesm.message.Response``."""
    inner = fields(message).get(GET_SUPPORTED_ATT_KEY_ID_NUM)
    if not isinstance(inner, bytes):
        raise ProtocolError("the answer holds no GetSupportedAttKeyIDNumResponse")
    values = fields(inner)
    error_code, count = values.get(1), values.get(2, 0)
    if not isinstance(error_code, int) or not isinstance(count, int):
        raise ProtocolError("GetSupportedAttKeyIDNumResponse without an errorCode")
    return AttKeyIDNum(error_code=error_code, att_key_id_num=count)


def get_supported_att_key_id_num(path: str, timeout: float) -> AttKeyIDNum:
    """Ask the aesmd at the unix socket ``path``; ``timeout`` seconds bound the whole exchange (a peer
    that answers a byte at a time does not stretch it).

    Raises ``OSError`` (no socket, refused, timed out, closed early) or :class:`ProtocolError`."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(path)
        connection.sendall(frame(request(max(1, int(timeout * 1000)))))
        (size,) = struct.unpack("=I", _read_exactly(connection, 4, deadline))
        if not 0 < size <= MAX_RESPONSE:
            raise ProtocolError(f"answer of {size} bytes (at most {MAX_RESPONSE} expected)")
        return answer(_read_exactly(connection, size, deadline))


def _read_exactly(connection: socket.socket, size: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        connection.settimeout(remaining)
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"aesmd closed the connection after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)
