"""What the AMF0 and AMF3 decoders share: value types, limits, the error, and the byte reader.

Public names here are re-exported by `appliance.media.rtmp.amf0`; import them from there. This module
exists so that `amf0` (which switches to AMF3 on the avmplus-object marker) and `amf3` can share one reader,
one set of limits and one error without importing each other.

Theory of operation: limits
---------------------------
A decode call owns one `Reader`. Memory follows the bytes actually received: every length or count the
peer declares is checked against the bytes left before anything is allocated. Beyond that the reader
tracks three things a well-formed but hostile payload could abuse:

- Nesting. `open_container` counts enclosing objects and arrays; more than `Limits.max_depth` raises, so
  recursive decoding (and anyone walking the result) stays far from Python's recursion limit.
- Back-references. AMF0's reference marker and AMF3's reference tables let a few bytes stand for a value
  decoded earlier. The decoders share the earlier Python object rather than copying it, so memory is not
  at risk, but a chain of references to references describes exponentially many values to whoever walks
  the result (encoding it again, comparing it, logging it). Each resolved reference therefore costs the
  number of values it stands for, and the total per decode call is capped by `Limits.max_references`.
  A reference also adds the height of its target to the current nesting, checked against `max_depth`.
- Cycles. A reference to an object whose decoding has not finished (an AMF0 `this.self = this`) would
  make a cyclic value that equality and re-encoding cannot handle; it raises instead. RTMP peers never
  send them.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_LIMITS",
    "UNDEFINED",
    "AMFDate",
    "AMFError",
    "Limits",
    "Reader",
    "TypedObject",
    "Undefined",
    "XMLDocument",
]

# Each nesting level costs the decoders about three Python frames; keep well inside the default limit of
# 1000 even when the caller is itself deep in a stack.
_MAX_DEPTH_CAP = 128

_F64 = struct.Struct(">d")


class AMFError(ValueError):
    """Malformed AMF data, or data past a `Limits` cap.

    Args:
        message: What was wrong.
        offset: Byte offset in the decoded buffer where the problem was found.

    Attributes:
        offset: As given.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset


class Undefined(enum.Enum):
    """The type of `UNDEFINED`, ActionScript's `undefined` (AMF0 marker 0x06, AMF3 marker 0x00).

    `None` stands for AMF `null`; `undefined` is a distinct value some peers send (FFmpeg puts it in
    `onStatus` replies), so it gets its own singleton to survive a decode/encode round trip.
    """

    UNDEFINED = 0

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED = Undefined.UNDEFINED


@dataclass(frozen=True, slots=True)
class AMFDate:
    """An AMF date.

    Attributes:
        ms: Milliseconds since the Unix epoch, UTC (a double on the wire, so fractions and NaN occur).
        tz: The AMF0 time-zone field, minutes as a signed 16-bit number. The AMF0 spec says senders
            should write 0 and readers ignore it; it is kept only so that re-encoding gives the same
            bytes. AMF3 dates have no such field and decode with 0.
    """

    ms: float
    tz: int = 0


class XMLDocument(str):
    """An XML document carried as text (AMF0 marker 0x0F, AMF3 markers 0x07 and 0x0B).

    A `str` subclass so it can be used as text, but encoding it writes the XML marker, not a string.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"XMLDocument({str.__repr__(self)})"


@dataclass(slots=True)
class TypedObject:
    """An object of a named ActionScript class (AMF0 typed object 0x10, AMF3 object with a class name).

    Attributes:
        class_name: The registered alias of the class, e.g. "flex.messaging.io.ArrayCollection".
        fields: The object's members in wire order (for AMF3: sealed members, then dynamic ones).
    """

    class_name: str
    fields: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Caps a decode call enforces; passing one raises `AMFError`.

    Attributes:
        max_depth: Most nested objects/arrays (a top-level object is level 1). At most 128.
        max_string: Most bytes in one string, long string, XML document or AMF3 byte array.
        max_items: Most entries in one object, ECMA array, strict array or AMF3 array/object.
        max_references: Budget for back-references per decode call: each resolved reference costs the
            number of values it stands for (1 for a string, the whole tree for an object). See the module
            docstring of `appliance.media.rtmp._amf` for why.

    Raises:
        ValueError: A cap is out of range.
    """

    max_depth: int = 32
    max_string: int = 1024 * 1024
    max_items: int = 65536
    max_references: int = 65536

    def __post_init__(self) -> None:
        if not 1 <= self.max_depth <= _MAX_DEPTH_CAP:
            raise ValueError(f"Limits.max_depth={self.max_depth}: want 1..{_MAX_DEPTH_CAP}")
        for name in ("max_string", "max_items", "max_references"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"Limits.{name}={value}: must be >= 0")


DEFAULT_LIMITS = Limits()


class Reader:
    """A cursor over one buffer plus the bookkeeping every limit needs. One per decode call.

    Args:
        data: The whole buffer (offsets in errors are into it).
        pos: Where decoding starts.
        limits: The caps.

    Attributes:
        data, pos, limits: As given; `pos` advances as values are read.
        level: Objects/arrays enclosing the value being decoded.
        deepest: The deepest level reached inside the innermost open container.
        values: Values decoded so far, references counted as what they stand for.
        ref_cost: Back-reference budget used so far.
    """

    __slots__ = ("data", "deepest", "level", "limits", "pos", "ref_cost", "values")

    def __init__(self, data: bytes, pos: int, limits: Limits) -> None:
        self.data = data
        self.pos = pos
        self.limits = limits
        self.level = 0
        self.deepest = 0
        self.values = 0
        self.ref_cost = 0

    # -- bytes ----------------------------------------------------------------------------------------

    def take(self, n: int, what: str) -> int:
        """Reserve `n` bytes and return their start offset.

        Raises:
            AMFError: Fewer than `n` bytes are left.
        """
        start = self.pos
        end = start + n
        if end > len(self.data):
            raise AMFError(f"truncated {what}: need {n} bytes, {len(self.data) - start} left", start)
        self.pos = end
        return start

    def left(self) -> int:
        """Bytes not yet read."""
        return len(self.data) - self.pos

    def u8(self, what: str) -> int:
        return self.data[self.take(1, what)]

    def u16(self, what: str) -> int:
        start = self.take(2, what)
        return int.from_bytes(self.data[start : start + 2], "big")

    def u32(self, what: str) -> int:
        start = self.take(4, what)
        return int.from_bytes(self.data[start : start + 4], "big")

    def f64(self, what: str) -> float:
        value: float = _F64.unpack_from(self.data, self.take(8, what))[0]
        return value

    def text(self, n: int, what: str) -> str:
        """Read `n` bytes of UTF-8.

        Raises:
            AMFError: Past `max_string`, truncated, or not valid UTF-8.
        """
        if n > self.limits.max_string:
            raise AMFError(f"{what} of {n} bytes exceeds the limit of {self.limits.max_string}", self.pos)
        start = self.take(n, what)
        try:
            return self.data[start : start + n].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AMFError(f"{what} is not valid UTF-8: {exc.reason}", start + exc.start) from None

    def raw(self, n: int, what: str) -> bytes:
        """Read `n` opaque bytes, capped like a string."""
        if n > self.limits.max_string:
            raise AMFError(f"{what} of {n} bytes exceeds the limit of {self.limits.max_string}", self.pos)
        start = self.take(n, what)
        return bytes(self.data[start : start + n])

    def check_count(self, count: int, min_size: int, what: str, at: int) -> None:
        """Reject a declared entry count past `max_items` or larger than the bytes left could hold."""
        if count > self.limits.max_items:
            raise AMFError(f"{what} of {count} entries exceeds the limit of {self.limits.max_items}", at)
        if count * min_size > self.left():
            raise AMFError(f"{what} claims {count} entries but only {self.left()} bytes are left", at)

    def check_items(self, n: int, what: str, at: int) -> None:
        """Reject the n-th entry of a container without a declared count."""
        if n > self.limits.max_items:
            raise AMFError(f"{what} has more than {self.limits.max_items} entries", at)

    # -- nesting and references -----------------------------------------------------------------------

    def open_container(self, at: int) -> tuple[int, int]:
        """Enter an object/array whose marker is at `at`; returns a mark for `close_container`.

        The container itself must already be counted in `values`.

        Raises:
            AMFError: Nesting deeper than `max_depth`.
        """
        level = self.level + 1
        if level > self.limits.max_depth:
            raise AMFError(f"nesting deeper than {self.limits.max_depth} levels", at)
        self.level = level
        saved = self.deepest
        self.deepest = level
        return self.values - 1, saved

    def close_container(self, mark: tuple[int, int]) -> tuple[int, int]:
        """Leave the container opened with `mark`; returns its (size in values, height in levels)."""
        before, saved = mark
        height = self.deepest - self.level + 1
        self.deepest = max(saved, self.deepest)
        self.level -= 1
        return self.values - before, height

    def charge_reference(self, size: int, height: int, at: int) -> None:
        """Account for a resolved reference to a value of `size` values and `height` levels.

        The reference itself must already be counted in `values`.

        Raises:
            AMFError: Past `max_references` or, counting the target's height, past `max_depth`.
        """
        self.ref_cost += size
        if self.ref_cost > self.limits.max_references:
            raise AMFError(f"references stand for more than {self.limits.max_references} values in total", at)
        reach = self.level + height
        if reach > self.limits.max_depth:
            raise AMFError(f"reference nests deeper than {self.limits.max_depth} levels", at)
        self.deepest = max(self.deepest, reach)
        self.values += size - 1
