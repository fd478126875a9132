"""A client of aesmd's socket protocol, for tests: what the SGX libraries' SocketTransporter sends.

A message is a uint32 length in host byte order, then a serialized protobuf: ``aesm.message.Request`` to
aesmd, ``aesm.message.Response`` back (linux-sgx ``psw/ae/aesm_service/source/core/ipc/messages.proto``,
proto2). The few fields the tests need are encoded by hand: a protobuf field is a varint key
``number << 3 | wire type`` followed by a varint (type 0) or a varint length and that many bytes (type 2).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path

#: ``Request.getSupportedAttKeyIDNumReq`` / ``Response.getSupportedAttKeyIDNumRes``.
GET_SUPPORTED_ATT_KEY_ID_NUM = 21
#: ``Request.initQuoteExReq`` / ``Response.initQuoteExRes``.
INIT_QUOTE_EX = 15
#: ``GetSupportedAttKeyIDNumRequest.timeout`` (every request has its timeout, in ms, as field 9).
TIMEOUT_FIELD = 9
_VARINT = 0
_BYTES = 2
_MAX_RESPONSE = 1 << 20


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    return varint(number << 3 | _VARINT) + varint(value)


def bytes_field(number: int, value: bytes) -> bytes:
    return varint(number << 3 | _BYTES) + varint(len(value)) + value


def request(field: int, timeout_ms: int = 5000) -> bytes:
    """A serialized ``aesm.message.Request`` carrying the request of ``field`` with its timeout."""
    return bytes_field(field, varint_field(TIMEOUT_FIELD, timeout_ms))


def parse(message: bytes) -> dict[int, int | bytes]:
    """The varint and length-delimited fields of one message (field number → value; the last one wins)."""
    fields: dict[int, int | bytes] = {}
    position = 0

    def read_varint() -> int:
        nonlocal position
        value = shift = 0
        while True:
            if position >= len(message):
                raise ValueError("truncated varint")
            byte = message[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while position < len(message):
        key = read_varint()
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            fields[number] = read_varint()
        elif wire == _BYTES:
            size = read_varint()
            if position + size > len(message):
                raise ValueError("truncated field")
            fields[number] = message[position : position + size]
            position += size
        else:
            raise ValueError(f"wire type {wire} not expected from aesmd")
    return fields


def frame(message: bytes) -> bytes:
    return struct.pack("=I", len(message)) + message


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"aesmd closed the connection after {len(data)} of {size} bytes")
        data += chunk
    return data


def transact(connection: socket.socket, message: bytes) -> bytes:
    """Send one framed request and read the framed response."""
    connection.sendall(frame(message))
    (size,) = struct.unpack("=I", _read_exactly(connection, 4))
    if size > _MAX_RESPONSE:
        raise ValueError(f"response of {size} bytes")
    return _read_exactly(connection, size)


@dataclass(frozen=True)
class AttKeyIDNum:
    """``GetSupportedAttKeyIDNumResponse``."""

    error_code: int
    att_key_id_num: int | None


def get_supported_att_key_id_num(socket_path: Path, timeout: float = 10.0) -> AttKeyIDNum:
    """Ask aesmd how many attestation key IDs it supports (what ``sgx_get_supported_att_key_id_num`` asks)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(str(socket_path))
        response = parse(transact(connection, request(GET_SUPPORTED_ATT_KEY_ID_NUM)))
    inner = response.get(GET_SUPPORTED_ATT_KEY_ID_NUM)
    if not isinstance(inner, bytes):
        raise ValueError(f"no GetSupportedAttKeyIDNumResponse in {response}")
    fields = parse(inner)
    error_code, count = fields.get(1), fields.get(2)
    if not isinstance(error_code, int) or not isinstance(count, int | None):
        raise ValueError(f"malformed GetSupportedAttKeyIDNumResponse {fields}")
    return AttKeyIDNum(error_code=error_code, att_key_id_num=count)
