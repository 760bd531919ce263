"""MSB-first bit reading and writing for codec headers (SPS, VUI, AudioSpecificConfig).

Theory of operation
-------------------
H.264, HEVC and MPEG-4 audio headers are bit fields and Exp-Golomb codes packed most significant bit first
(ITU-T H.264 7.2 and 9.1, H.265 7.2 and 9.2, ISO/IEC 14496-3 1.6). `BitReader` reads them from immutable
bytes; `BitWriter` is its inverse, for the few places that build headers (AudioSpecificConfig) and for tests.

Video parameter sets travel as NAL units whose payload (the RBSP) has emulation prevention bytes inserted
so that no start code appears inside it (H.264 7.4.1, H.265 7.4.2). `unescape_rbsp` removes them before
a `BitReader` sees the payload; `escape_rbsp` inserts them.

Every parsing failure in the codec modules is a `CodecParseError`, a `ValueError`; running out of bits is
its subclass `BitstreamError`. Callers that parse untrusted input catch `CodecParseError` (or
`ValueError`) and nothing else.

The module is pure: no I/O, no trio.
"""

from __future__ import annotations

__all__ = [
    "BitReader",
    "BitWriter",
    "BitstreamError",
    "CodecParseError",
    "escape_rbsp",
    "unescape_rbsp",
]

# H.264 9.1 and H.265 9.2 bound ue(v) values to 2**32 - 2, which takes 31 leading zeros; 32 is tolerated
# as some encoders emit it for 2**32 - 1, anything longer is corrupt data.
_MAX_LEADING_ZEROS = 32


class CodecParseError(ValueError):
    """A codec configuration record, parameter set or AudioSpecificConfig is malformed."""


class BitstreamError(CodecParseError):
    """A bit reader ran past the end of its data, or met an over-long Exp-Golomb code."""


class BitReader:
    """Reads bit fields, most significant bit first, from bytes.

    Args:
        data: The bytes to read; for NAL units, the RBSP after `unescape_rbsp`.
    """

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._end = len(data) * 8
        self._pos = 0

    @property
    def bits_left(self) -> int:
        """How many bits remain unread."""
        return self._end - self._pos

    @property
    def position(self) -> int:
        """The offset of the next bit to read, in bits from the start."""
        return self._pos

    def read_bits(self, n: int) -> int:
        """Read an n-bit unsigned integer (u(n) in the specifications).

        Args:
            n: The number of bits, >= 0; 0 reads nothing and returns 0.

        Returns:
            The value.

        Raises:
            BitstreamError: Fewer than n bits are left.
            ValueError: n is negative.
        """
        if n < 0:
            raise ValueError(f"read_bits({n}): want n >= 0")
        if n == 0:
            return 0
        pos = self._pos
        if n > self._end - pos:
            raise BitstreamError(f"need {n} bits at bit offset {pos}, {self._end - pos} left")
        first = pos >> 3
        last = (pos + n + 7) >> 3
        chunk = int.from_bytes(self._data[first:last], "big")
        self._pos = pos + n
        return (chunk >> (last * 8 - pos - n)) & ((1 << n) - 1)

    def read_bit(self) -> int:
        """Read one bit (u(1)).

        Returns:
            0 or 1.

        Raises:
            BitstreamError: No bits are left.
        """
        pos = self._pos
        if pos >= self._end:
            raise BitstreamError(f"need 1 bit at bit offset {pos}, 0 left")
        self._pos = pos + 1
        return (self._data[pos >> 3] >> (7 - (pos & 7))) & 1

    def read_flag(self) -> bool:
        """Read one bit as a bool.

        Raises:
            BitstreamError: No bits are left.
        """
        return self.read_bit() == 1

    def read_ue(self) -> int:
        """Read an unsigned Exp-Golomb code (ue(v), H.264 9.1).

        Returns:
            The value, >= 0.

        Raises:
            BitstreamError: The data ends inside the code, or it has more than 32 leading zero bits.
        """
        start = self._pos
        zeros = 0
        while self.read_bit() == 0:
            zeros += 1
            if zeros > _MAX_LEADING_ZEROS:
                raise BitstreamError(f"Exp-Golomb code at bit offset {start} has over 32 leading zeros")
        return (1 << zeros) - 1 + self.read_bits(zeros)

    def read_se(self) -> int:
        """Read a signed Exp-Golomb code (se(v), H.264 9.1.1: 1, -1, 2, -2, ... for 1, 2, 3, 4, ...).

        Raises:
            BitstreamError: As for `read_ue`.
        """
        k = self.read_ue()
        return (k + 1) >> 1 if k & 1 else -(k >> 1)

    def skip_bits(self, n: int) -> None:
        """Skip n bits.

        Raises:
            BitstreamError: Fewer than n bits are left.
            ValueError: n is negative.
        """
        if n < 0:
            raise ValueError(f"skip_bits({n}): want n >= 0")
        if n > self._end - self._pos:
            raise BitstreamError(f"cannot skip {n} bits at bit offset {self._pos}, {self.bits_left} left")
        self._pos += n


class BitWriter:
    """Writes bit fields, most significant bit first; the inverse of `BitReader`."""

    __slots__ = ("_acc", "_nbits")

    def __init__(self) -> None:
        self._acc = 0
        self._nbits = 0

    @property
    def bit_length(self) -> int:
        """How many bits have been written."""
        return self._nbits

    def write_bits(self, value: int, n: int) -> None:
        """Write value as an n-bit unsigned integer.

        Raises:
            ValueError: value does not fit in n bits, or either is negative.
        """
        if n < 0 or value < 0 or value >> n:
            raise ValueError(f"write_bits({value}, {n}): want 0 <= value < 2**n")
        self._acc = (self._acc << n) | value
        self._nbits += n

    def write_bit(self, bit: int | bool) -> None:
        """Write one bit (any truthy value writes 1)."""
        self.write_bits(1 if bit else 0, 1)

    def write_ue(self, value: int) -> None:
        """Write an unsigned Exp-Golomb code.

        Raises:
            ValueError: value is negative.
        """
        if value < 0:
            raise ValueError(f"write_ue({value}): want value >= 0")
        code = value + 1
        self.write_bits(code, 2 * code.bit_length() - 1)

    def write_se(self, value: int) -> None:
        """Write a signed Exp-Golomb code."""
        self.write_ue(2 * value - 1 if value > 0 else -2 * value)

    def to_bytes(self) -> bytes:
        """Return the bits written so far, padded with zero bits to a whole byte."""
        pad = -self._nbits % 8
        return (self._acc << pad).to_bytes((self._nbits + pad) // 8, "big")


def unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation prevention bytes: every 00 00 03 becomes 00 00 (H.264 7.4.1, H.265 7.4.2).

    The zero count restarts after a removed byte, so 00 00 03 00 00 03 becomes four zero bytes.

    Args:
        nal: A NAL unit or its payload.

    Returns:
        The bytes with emulation prevention removed (`nal` itself when there is none).
    """
    found = nal.find(b"\x00\x00\x03")
    if found < 0:
        return nal
    parts: list[bytes] = []
    start = 0
    while found >= 0:
        parts.append(nal[start : found + 2])
        start = found + 3
        found = nal.find(b"\x00\x00\x03", start)
    parts.append(nal[start:])
    return b"".join(parts)


def escape_rbsp(rbsp: bytes) -> bytes:
    """Insert emulation prevention bytes: the inverse of `unescape_rbsp`.

    A 03 goes in after any two zero bytes followed by a byte <= 03, or at the end of the data (so that a
    NAL unit ending in 00 00 stays unambiguous).

    Args:
        rbsp: A NAL unit's header and raw payload.

    Returns:
        The escaped bytes.
    """
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    if zeros >= 2:
        out.append(3)
    return bytes(out)
