"""Server-to-client WebSocket bytes (RFC 6455), built once and shared by every recipient.

Server frames are never masked, so the bytes for one message are identical on every connection. This module also
answers a well-formed opening handshake without re-parsing it (:func:`fast_accept`) and compresses a shared frame
once for every connection that negotiated permessage-deflate without context takeover (:func:`deflated`).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import struct
import time
import zlib
from collections.abc import Iterable

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82
_RSV1 = 0x40
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SYNC_TAIL = b"\x00\x00\xff\xff"
# Below this many payload bytes a frame is sent as it is: deflate saves nothing worth its header on so little.
MIN_DEFLATE_BYTES = 64
PING_FRAME = b"\x89\x00"  # an unmasked WebSocket ping with no payload: clients answer with a pong
# The headers of frames of up to 125 payload bytes, made once: building one is a look-up, not a bytes() of a tuple.
_SHORT_HEADERS = {
    first: [bytes((first, length)) for length in range(126)]
    for first in (_FIN_TEXT, _FIN_BINARY, _FIN_TEXT | _RSV1, _FIN_BINARY | _RSV1)
}
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


def build_frame(payload: bytes, first: int) -> bytes:
    """An unmasked, final data frame (RFC 6455 §5.2) whose first byte is ``first``: text or binary, RSV1 set if the
    payload is compressed."""
    length = len(payload)
    if length < 126:
        return _SHORT_HEADERS[first][length] + payload
    if length < 65_536:
        return _HEADER_16(first, 126, length) + payload
    return _HEADER_64(first, 127, length) + payload


def payload_offset(frame: bytes) -> int:
    """Where the payload of an unmasked frame (one built by :func:`build_frame`) begins."""
    length = frame[1] & 0x7F
    return 2 if length < 126 else 4 if length == 126 else 10


def encode_text(text: str) -> bytes:
    return build_frame(text.encode(), _FIN_TEXT)


def binary_frame(payload: bytes) -> bytes:
    """A final binary frame: an Ably connection's msgpack ProtocolMessage."""
    return build_frame(payload, _FIN_BINARY)


# -- permessage-deflate (RFC 7692), without context takeover on the server's side ------------------------------

_recent: list[tuple[bytes, int, bytes]] = []


def deflated(frame: bytes, max_window_bits: int) -> bytes:
    """``frame`` compressed for a connection whose server window is ``max_window_bits``, or ``frame`` itself.

    With ``server_no_context_takeover`` every message is compressed on its own, so the result is the same for every
    such connection: a fan-out compresses once and every recipient gets the same bytes. The last few results are
    kept, keyed by the identity of the frame (the shared frame object of a publish).
    """
    for entry in _recent:
        if entry[0] is frame and entry[1] == max_window_bits:
            return entry[2]
    result = _deflate(frame, max_window_bits)
    _recent.insert(0, (frame, max_window_bits, result))
    del _recent[8:]
    return result


def _deflate(frame: bytes, max_window_bits: int) -> bytes:
    first = frame[0]
    if (first != _FIN_TEXT and first != _FIN_BINARY) or max_window_bits < 9:  # zlib cannot deflate in 256 bytes
        return frame  # control frames and fragments are never compressed
    offset = payload_offset(frame)
    size = len(frame) - offset
    if size < MIN_DEFLATE_BYTES:
        return frame
    # No context is carried from message to message, so a window over the message's size buys nothing; a small one
    # is much cheaper to set up. Any window up to the negotiated one is valid for the client.
    bits = min(max_window_bits, max(9, size.bit_length()))
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits, 8)
    data = compressor.compress(memoryview(frame)[offset:]) + compressor.flush(zlib.Z_SYNC_FLUSH)
    if data.endswith(_SYNC_TAIL):
        data = data[:-4]
    if len(data) >= size:
        return frame  # an uncompressed message (RSV1 clear) is valid on a deflate connection too
    return build_frame(data, first | _RSV1)


# -- the opening handshake ----------------------------------------------------------------------------------------

_date: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The ``Date`` header's value, formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True).encode())
    return _date[1]


def fast_accept(method: bytes, version: str, headers: Iterable[tuple[str, str]]) -> tuple[bytes, str | None] | None:
    """``(Sec-WebSocket-Accept, Sec-WebSocket-Extensions offer)`` for a plainly valid RFC 6455 opening handshake.

    ``None`` when anything is unusual (a repeated header, a body, a bad key, another version): such a request is
    left to websockets' own parser, which answers it as it always did.
    """
    if method != b"GET" or version != "1.1":
        return None
    key = upgrade = connection = ws_version = offer = origin = None
    for name, value in headers:
        lower = name.lower()
        if not lower.startswith(("sec-websocket-", "upgrade", "connection", "origin", "content-", "transfer-")):
            continue
        if lower == "sec-websocket-key":
            if key is not None:
                return None
            key = value
        elif lower == "sec-websocket-version":
            if ws_version is not None:
                return None
            ws_version = value
        elif lower == "upgrade":
            if upgrade is not None:
                return None
            upgrade = value
        elif lower == "connection":
            if connection is not None:
                return None
            connection = value
        elif lower == "sec-websocket-extensions":
            if offer is not None:
                return None
            offer = value
        elif lower == "origin":
            if origin is not None:
                return None
            origin = value
        elif lower in ("content-length", "transfer-encoding", "sec-websocket-protocol"):
            return None
    if key is None or ws_version != "13" or upgrade is None or upgrade.strip().lower() != "websocket":
        return None
    if connection is None or not any(token.strip().lower() == "upgrade" for token in connection.split(",")):
        return None
    try:
        if len(base64.b64decode(key.encode(), validate=True)) != 16:
            return None
    except (binascii.Error, UnicodeEncodeError):
        return None
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()), offer


def switching_protocols(accept: bytes, extensions: str | None) -> bytes:
    """The 101 response, with the headers websockets' ``ServerProtocol.accept`` sends, in the same order."""
    head = b"HTTP/1.1 101 Switching Protocols\r\nDate: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" % (
        http_date()
    )
    head += b"Sec-WebSocket-Accept: " + accept + b"\r\n"
    if extensions is not None:
        head += b"Sec-WebSocket-Extensions: " + extensions.encode("latin-1") + b"\r\n"
    return head + b"\r\n"
