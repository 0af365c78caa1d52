"""A tiny hand-written MQTT encoder/decoder for byte-level tests.

It builds packets from the spec's field layout directly, so that what the broker sees is
exactly what a test wrote — including things no well-behaved client library would send
(a second CONNECT, garbage bytes, an empty client id with a persistent session, a filter
like ``a/#/b``).
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

# Packet types (high nibble of the first byte).
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

# Protocol levels.
V31 = 3
V311 = 4
V5 = 5


def varint(n: int) -> bytes:
    """Variable Byte Integer (§1.5.5)."""
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def read_varint(data: bytes, pos: int = 0) -> tuple[int, int]:
    """Decodes a Variable Byte Integer at ``pos``; returns (value, next position)."""
    value, mult = 0, 1
    while True:
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) * mult
        if not byte & 0x80:
            return value, pos
        mult *= 128


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def string(s: str | bytes) -> bytes:
    """UTF-8 string or binary data with its two-byte length prefix."""
    b = s.encode() if isinstance(s, str) else s
    return u16(len(b)) + b


def packet(kind: int, flags: int, body: bytes) -> bytes:
    """Fixed header + body."""
    return bytes([(kind << 4) | flags]) + varint(len(body)) + body


def properties(raw: bytes = b"") -> bytes:
    """A v5 property block: length then the encoded properties."""
    return varint(len(raw)) + raw


def connect(
    client_id: str = "",
    *,
    version: int = V311,
    clean: bool = True,
    keepalive: int = 60,
    will: tuple[str, bytes, int, bool] | None = None,
    props: bytes = b"",
    will_props: bytes = b"",
) -> bytes:
    """A CONNECT packet. ``will`` is (topic, payload, qos, retain)."""
    name = "MQIsdp" if version == V31 else "MQTT"
    flags = 0x02 if clean else 0
    if will:
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
    body = string(name) + bytes([version, flags]) + u16(keepalive)
    if version == V5:
        body += properties(props)
    body += string(client_id)
    if will:
        if version == V5:
            body += properties(will_props)
        body += string(will[0]) + string(will[1])
    return packet(CONNECT, 0, body)


def subscribe(packet_id: int, filters: list[tuple[str, int]], *, version: int = V311) -> bytes:
    """A SUBSCRIBE; each filter comes with its options byte (QoS in the low bits)."""
    body = u16(packet_id)
    if version == V5:
        body += properties()
    for f, opts in filters:
        body += string(f) + bytes([opts])
    return packet(SUBSCRIBE, 0x02, body)


def publish(
    topic: str,
    payload: bytes,
    *,
    qos: int = 0,
    packet_id: int | None = None,
    retain: bool = False,
    version: int = V311,
    props: bytes = b"",
) -> bytes:
    flags = (qos << 1) | (1 if retain else 0)
    body = string(topic)
    if qos:
        body += u16(packet_id or 1)
    if version == V5:
        body += properties(props)
    return packet(PUBLISH, flags, body + payload)


def disconnect(*, version: int = V311, reason: int = 0) -> bytes:
    if version == V5 and reason:
        return packet(DISCONNECT, 0, bytes([reason]))
    return packet(DISCONNECT, 0, b"")


_BYTE = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_U16 = {0x13, 0x21, 0x22, 0x23}
_U32 = {0x02, 0x11, 0x18, 0x27}
_VARINT = {0x0B}
_STRING = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
_BINARY = {0x09, 0x16}
_PAIR = {0x26}


def parse_properties(data: bytes, pos: int) -> tuple[dict[int, list], int]:
    """Decodes a v5 property block at ``pos``: {property id: [values]} and the end position."""
    length, pos = read_varint(data, pos)
    end = pos + length
    out: dict[int, list] = {}
    while pos < end:
        pid = data[pos]
        pos += 1
        if pid in _BYTE:
            value, pos = data[pos], pos + 1
        elif pid in _U16:
            value, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
        elif pid in _U32:
            value, pos = struct.unpack_from("!I", data, pos)[0], pos + 4
        elif pid in _VARINT:
            value, pos = read_varint(data, pos)
        elif pid in _STRING | _BINARY:
            n = struct.unpack_from("!H", data, pos)[0]
            value = data[pos + 2 : pos + 2 + n]
            value = value.decode() if pid in _STRING else value
            pos += 2 + n
        elif pid in _PAIR:
            k = struct.unpack_from("!H", data, pos)[0]
            key = data[pos + 2 : pos + 2 + k].decode()
            pos += 2 + k
            v = struct.unpack_from("!H", data, pos)[0]
            value = (key, data[pos + 2 : pos + 2 + v].decode())
            pos += 2 + v
        else:
            raise ValueError(f"unknown property id 0x{pid:02x}")
        out.setdefault(pid, []).append(value)
    return out, end


@dataclass
class Publish:
    topic: str
    packet_id: int | None
    properties: dict[int, list]
    payload: bytes
    qos: int
    dup: bool
    retain: bool


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes

    @property
    def connack_session_present(self) -> bool:
        assert self.kind == CONNACK
        return bool(self.body[0] & 1)

    @property
    def connack_code(self) -> int:
        """CONNACK return code (v3) or reason code (v5)."""
        assert self.kind == CONNACK
        return self.body[1]

    @property
    def disconnect_reason(self) -> int:
        assert self.kind == DISCONNECT
        return self.body[0] if self.body else 0

    def publish(self, version: int = V311) -> Publish:
        assert self.kind == PUBLISH
        qos = (self.flags >> 1) & 3
        n = struct.unpack_from("!H", self.body, 0)[0]
        topic = self.body[2 : 2 + n].decode()
        pos = 2 + n
        packet_id = None
        if qos:
            packet_id = struct.unpack_from("!H", self.body, pos)[0]
            pos += 2
        props: dict[int, list] = {}
        if version == V5:
            props, pos = parse_properties(self.body, pos)
        return Publish(topic, packet_id, props, self.body[pos:], qos,
                       bool(self.flags & 8), bool(self.flags & 1))

    def connack_properties(self) -> dict[int, list]:
        assert self.kind == CONNACK
        return parse_properties(self.body, 2)[0]

    def suback_codes(self, version: int = V311) -> list[int]:
        assert self.kind == SUBACK
        pos = 2
        if version == V5:
            length, pos = read_varint(self.body, pos)
            pos += length
        return list(self.body[pos:])


class Closed(Exception):
    """The broker closed the connection."""


class RawClient:
    """A blocking TCP connection with packet framing. Always use as a context manager (or call
    ``close``) so the socket is released even when a test fails."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no packet from the broker in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout as e:
            raise TimeoutError("no packet from the broker in time") from e
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed() from e
        if not chunk:
            raise Closed()
        self.buf += chunk

    def recv_packet(self, timeout: float = 10.0) -> Packet:
        """The next packet; raises ``Closed`` on EOF, ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                try:
                    length, pos = read_varint(self.buf, 1)
                except IndexError:
                    length, pos = None, 0
                if length is not None and len(self.buf) >= pos + length:
                    first = self.buf[0]
                    body = self.buf[pos : pos + length]
                    self.buf = self.buf[pos + length :]
                    return Packet(first >> 4, first & 0x0F, body)
            self._fill(deadline)

    def expect(self, kind: int, timeout: float = 10.0) -> Packet:
        p = self.recv_packet(timeout)
        assert p.kind == kind, f"expected packet type {kind}, got {p.kind} ({p.body!r})"
        return p

    def wait_closed(self, timeout: float = 10.0) -> list[Packet]:
        """Reads until the broker closes the connection; returns the packets read before.
        Raises ``TimeoutError`` when the connection is still open after ``timeout``."""
        deadline = time.monotonic() + timeout
        packets = []
        while True:
            try:
                packets.append(self.recv_packet(max(0.0, deadline - time.monotonic())))
            except Closed:
                return packets

    def connect(self, client_id: str, *, version: int = V311, **kw) -> Packet:
        """Sends CONNECT and returns the CONNACK."""
        self.send(connect(client_id, version=version, **kw))
        return self.expect(CONNACK)
