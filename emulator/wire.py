"""Server-to-client WebSocket frames (RFC 6455 §5.2), built once per message and shared by every recipient.

Server frames are never masked, so the bytes for one message are identical on every connection.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81


def text_frame(payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        return bytes((_FIN_TEXT, length)) + payload
    if length < 65_536:
        return struct.pack("!BBH", _FIN_TEXT, 126, length) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, length) + payload


def encode_text(text: str) -> bytes:
    return text_frame(text.encode())
