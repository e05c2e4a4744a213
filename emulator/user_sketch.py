"""Distinct user ids as a HyperLogLog sketch (Flajolet, Fusy, Gandouet, Meunier 2007), for the usage file's
``unique_users``: runs in turn (restarts) and side by side (a cluster's nodes, ``--workers``) each see some of an app's
users, often the same ones, and their counts cannot be added up nor compared; their sketches merge, register by
register, into the sketch of every user any of them saw. 2^14 one-byte registers, 16 KiB an app (a few hundred bytes
in the file while users are few, compressed): a standard error of 1.04 / √16384 ≈ 0.8 %.
"""

from __future__ import annotations

import base64
import hashlib
import math
import zlib

PRECISION = 14
REGISTERS = 1 << PRECISION
_REST_BITS = 64 - PRECISION  # the hash bits after the register index, whose leading zeros are counted
_MAX_RANK = _REST_BITS + 1
_ALPHA = 0.7213 / (1 + 1.079 / REGISTERS)
# Below this estimate HyperLogLog is biased; counting the empty registers (linear counting) is not.
_LINEAR_COUNTING_BELOW = 2.5 * REGISTERS


class UserSketch:
    """A mergeable count of distinct user ids."""

    __slots__ = ("registers",)

    def __init__(self, registers: bytearray | None = None) -> None:
        self.registers = bytearray(REGISTERS) if registers is None else registers

    def add(self, user_id: str) -> None:
        # A hash every process and machine agrees on (Python's hash() of a str is salted per process).
        digest = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        value = int.from_bytes(digest, "big")
        index, rest = value >> _REST_BITS, value & ((1 << _REST_BITS) - 1)
        rank = _REST_BITS - rest.bit_length() + 1
        if rank > self.registers[index]:
            self.registers[index] = rank

    def merged(self, other: UserSketch) -> UserSketch:
        """The sketch of the users either saw."""
        return UserSketch(bytearray(map(max, self.registers, other.registers)))

    def estimate(self) -> int:
        empty = self.registers.count(0)
        raw = _ALPHA * REGISTERS * REGISTERS / math.fsum(2.0**-rank for rank in self.registers)
        if raw <= _LINEAR_COUNTING_BELOW and empty:
            return round(REGISTERS * math.log(REGISTERS / empty))
        return round(raw)

    def encode(self) -> str:
        """The registers, compressed, in base64: as the usage file keeps them."""
        return base64.b64encode(zlib.compress(bytes(self.registers), 9)).decode("ascii")

    @classmethod
    def decode(cls, text: object) -> UserSketch:
        """The sketch ``encode`` wrote; ValueError saying what is wrong with anything else."""
        if not isinstance(text, str):
            raise ValueError(f"is not a string (base64 of the compressed registers) but {type(text).__name__}")
        try:
            compressed = base64.b64decode(text, validate=True)
            inflater = zlib.decompressobj()
            registers = inflater.decompress(compressed, REGISTERS + 1)  # no more: a forged one cannot fill memory
        except (ValueError, zlib.error) as exc:  # binascii.Error is a ValueError, and so is a non-ASCII string's
            raise ValueError(f"is not base64 of zlib-compressed registers ({exc})") from None
        if len(registers) != REGISTERS or not inflater.eof:
            raise ValueError(f"does not hold {REGISTERS} registers")
        if max(registers) > _MAX_RANK:
            raise ValueError(f"has a register over {_MAX_RANK}")
        return cls(bytearray(registers))
