"""AMF0 encoding and decoding (Adobe AMF 0 specification, December 2007) for RTMP messages.

Theory of operation
-------------------
RTMP command messages (type 20) and data messages (type 18) carry a plain sequence of AMF0 values, one
after another with no framing (RTMP spec 7.1.1-7.1.2): `"connect", 1.0, {...}`. Type-17 messages (command
AMF3) are the same after a leading format byte, with values that switch to AMF3 through the
avmplus-object marker 0x11; `decode_command_amf3` handles them, `appliance.media.rtmp.amf3` the AMF3
values.

Each value starts with a one-byte marker (AMF0 spec 2.1). Python types map as follows:

    number 0x00 <-> float (ints encode as numbers)     object 0x03 <-> dict (any Mapping encodes)
    boolean 0x01 <-> bool                              ECMA array 0x08 <-> ECMAArray
    string 0x02, long string 0x0C <-> str              strict array 0x0A <-> list (tuples encode)
    null 0x05 <-> None                                 date 0x0B <-> AMFDate
    undefined 0x06 <-> UNDEFINED                       XML document 0x0F <-> XMLDocument
    typed object 0x10 <-> TypedObject                  avmplus 0x11 -> one AMF3 value (decode only)

The unsupported marker 0x0D (a sender's "cannot serialize this") decodes as UNDEFINED. Movieclip 0x04,
recordset 0x0E and unknown markers raise `AMFError`.

Objects, ECMA arrays, strict arrays and typed objects enter a reference table as they start (spec 2.9); a
reference 0x07 names an earlier one by index and decodes as the same Python object. The table spans a
whole `decode_all` call, i.e. one RTMP message.

Leniency, because real peers need it:
- ECMA arrays are read up to the object-end marker 00 00 09 and their count is ignored: librtmp and old
  Flash encoders write 0 or a wrong number there. Nothing is allocated from that count.
- A property with an empty name followed by anything but the end marker is kept under the key "".
A container that ends before its end marker is truncated, and that is an error.

Hostile input can only produce values or `AMFError`: every length and count is checked against the bytes
left before use, invalid UTF-8 raises, and `Limits` caps nesting, string sizes, entries and the work
back-references can make (see `appliance.media.rtmp._amf`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from appliance.media.rtmp import amf3
from appliance.media.rtmp._amf import (
    DEFAULT_LIMITS,
    UNDEFINED,
    AMFDate,
    AMFError,
    Limits,
    Reader,
    TypedObject,
    Undefined,
    XMLDocument,
)

__all__ = [
    "DEFAULT_LIMITS",
    "UNDEFINED",
    "AMFDate",
    "AMFError",
    "ECMAArray",
    "Limits",
    "TypedObject",
    "Undefined",
    "XMLDocument",
    "decode_all",
    "decode_command_amf3",
    "decode_one",
    "encode",
]

_NUMBER = 0x00
_BOOLEAN = 0x01
_STRING = 0x02
_OBJECT = 0x03
_MOVIECLIP = 0x04
_NULL = 0x05
_UNDEFINED = 0x06
_REFERENCE = 0x07
_ECMA_ARRAY = 0x08
_OBJECT_END = 0x09
_STRICT_ARRAY = 0x0A
_DATE = 0x0B
_LONG_STRING = 0x0C
_UNSUPPORTED = 0x0D
_RECORDSET = 0x0E
_XML_DOCUMENT = 0x0F
_TYPED_OBJECT = 0x10
_AVMPLUS = 0x11

_END = b"\x00\x00\x09"
_F64 = struct.Struct(">d")
_DATE_BODY = struct.Struct(">dh")
# Encoding recurses once per level; a value nested deeper than this is almost surely a cycle.
_MAX_ENCODE_DEPTH = 128


class ECMAArray(dict[str, object]):
    """An AMF0 ECMA array (marker 0x08): an associative array, e.g. the body of FLV `onMetaData`.

    Decoding gives this subclass so that encoding again writes the ECMA array marker; a plain dict
    encodes as an anonymous object (0x03). Otherwise it is an ordinary dict.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ECMAArray({dict.__repr__(self)})"


# -- decoding ---------------------------------------------------------------------------------------


class _Decoder:
    """One AMF0 context: the reference table over a `Reader`."""

    __slots__ = ("_heights", "_r", "_refs", "_sizes")

    def __init__(self, reader: Reader) -> None:
        self._r = reader
        # Referenceable values with their size in values and height in levels; size -1 while the
        # value's members are still being decoded.
        self._refs: list[object] = []
        self._sizes: list[int] = []
        self._heights: list[int] = []

    def value(self) -> object:
        r = self._r
        at = r.pos
        marker = r.u8("AMF0 marker")
        r.values += 1
        if marker == _STRING:
            return r.text(r.u16("string length"), "string")
        if marker == _NUMBER:
            return r.f64("number")
        if marker == _OBJECT:
            obj: dict[str, object] = {}
            return self._container(obj, obj, at)
        if marker == _BOOLEAN:
            return r.u8("boolean") != 0
        if marker == _NULL:
            return None
        if marker in (_UNDEFINED, _UNSUPPORTED):
            return UNDEFINED
        if marker == _ECMA_ARRAY:
            r.u32("ECMA array count")  # ignored: see the module docstring
            ecma = ECMAArray()
            return self._container(ecma, ecma, at)
        if marker == _STRICT_ARRAY:
            return self._strict_array(at)
        if marker == _REFERENCE:
            return self._reference(at)
        if marker == _LONG_STRING:
            return r.text(r.u32("long string length"), "long string")
        if marker == _DATE:
            ms, tz = _DATE_BODY.unpack_from(r.data, r.take(_DATE_BODY.size, "date"))
            return AMFDate(ms, tz)
        if marker == _XML_DOCUMENT:
            return XMLDocument(r.text(r.u32("XML document length"), "XML document"))
        if marker == _TYPED_OBJECT:
            typed = TypedObject(r.text(r.u16("class name length"), "class name"), {})
            return self._container(typed, typed.fields, at)
        if marker == _AVMPLUS:
            r.values -= 1  # the switch is not a value of its own; the AMF3 value counts itself
            return amf3.decode_value(r)
        if marker == _OBJECT_END:
            raise AMFError("object-end marker outside an object", at)
        if marker in (_MOVIECLIP, _RECORDSET):
            name = "movieclip" if marker == _MOVIECLIP else "recordset"
            raise AMFError(f"AMF0 {name} (marker 0x{marker:02x}) not supported", at)
        raise AMFError(f"unknown AMF0 marker 0x{marker:02x}", at)

    def _register(self, value: object) -> int:
        self._refs.append(value)
        self._sizes.append(-1)
        self._heights.append(0)
        return len(self._refs) - 1

    def _container(self, value: object, props: dict[str, object], at: int) -> object:
        # Object, ECMA array or typed object: properties up to the end marker (spec 2.5, 2.10, 2.18).
        r = self._r
        data = r.data
        mark = r.open_container(at)
        index = self._register(value)
        n = 0
        while True:
            length = r.u16("property name length")
            if length == 0 and r.pos < len(data) and data[r.pos] == _OBJECT_END:
                r.pos += 1
                break
            key = r.text(length, "property name")
            n += 1
            r.check_items(n, "object", at)
            props[key] = self.value()
        self._sizes[index], self._heights[index] = r.close_container(mark)
        return value

    def _strict_array(self, at: int) -> list[object]:
        r = self._r
        count = r.u32("strict array count")
        r.check_count(count, 1, "strict array", at)
        mark = r.open_container(at)
        items: list[object] = []
        index = self._register(items)
        for _ in range(count):
            items.append(self.value())
        self._sizes[index], self._heights[index] = r.close_container(mark)
        return items

    def _reference(self, at: int) -> object:
        index = self._r.u16("reference")
        if index >= len(self._refs):
            raise AMFError(f"reference to object {index}, but only {len(self._refs)} were sent", at)
        size = self._sizes[index]
        if size < 0:
            raise AMFError(f"reference to object {index} from inside itself (a cycle)", at)
        self._r.charge_reference(size, self._heights[index], at)
        return self._refs[index]


def _reader(data: bytes, offset: int, limits: Limits) -> Reader:
    if not isinstance(data, bytes):
        data = bytes(data)  # bytearray/memoryview: slices must decode as text
    if not 0 <= offset <= len(data):
        raise AMFError(f"offset outside the {len(data)}-byte buffer", offset)
    return Reader(data, offset, limits)


def decode_one(data: bytes, offset: int = 0, limits: Limits = DEFAULT_LIMITS) -> tuple[object, int]:
    """Decode the AMF0 value at `offset`, with a fresh reference table.

    Args:
        data: The buffer.
        offset: Where the value's marker is.
        limits: Caps for this call.

    Returns:
        The value and the offset just past it.

    Raises:
        AMFError: Malformed, truncated, unsupported or past a limit (offsets are into `data`).
    """
    reader = _reader(data, offset, limits)
    value = _Decoder(reader).value()
    return value, reader.pos


def decode_all(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> list[object]:
    """Decode the AMF0 values of a message body, up to its end.

    Args:
        data: The body of a type-18 or type-20 message.
        limits: Caps for this call.

    Returns:
        The values in order (empty for an empty body).

    Raises:
        AMFError: Malformed, truncated, unsupported or past a limit (offsets are into `data`).
    """
    return _decode_from(data, 0, limits)


def decode_command_amf3(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> list[object]:
    """Decode the body of a type-17 (command AMF3) message.

    The body is a format byte 0x00 and then AMF0 values, which switch to AMF3 one value at a time with
    the avmplus-object marker. Some clients leave the format byte out; a body that starts with anything
    but 0x00 (normally 0x02, the command name's string marker) is decoded from its first byte. A command
    cannot start with a number, so a leading 0x00 is never the AMF0 number marker.

    Args:
        payload: The message body.
        limits: Caps for this call.

    Returns:
        The values: command name, transaction id, command object, arguments.

    Raises:
        AMFError: As for `decode_all` (offsets are into `payload`, format byte included).
    """
    return _decode_from(payload, 1 if payload[:1] == b"\x00" else 0, limits)


def _decode_from(data: bytes, offset: int, limits: Limits) -> list[object]:
    reader = _reader(data, offset, limits)
    decoder = _Decoder(reader)
    end = len(reader.data)
    values: list[object] = []
    while reader.pos < end:
        values.append(decoder.value())
    return values


# -- encoding ---------------------------------------------------------------------------------------


def encode(*values: object) -> bytes:
    """Encode values one after another, as a command or data message body.

    Args:
        values: float/int (as numbers), bool, str (long string past 65535 UTF-8 bytes), None (null),
            UNDEFINED, dicts and other Mappings with str keys (objects), ECMAArray, lists and tuples
            (strict arrays), AMFDate, XMLDocument, TypedObject; nested freely.

    Returns:
        The AMF0 bytes.

    Raises:
        TypeError: A value of another type, or an object key that is not a str.
        ValueError: A value AMF0 cannot hold: an int past the double range, a key or class name over
            65535 UTF-8 bytes, a string with lone surrogates, a date time zone outside 16 bits, or
            nesting deeper than 128 levels (which is how a cyclic value shows).
    """
    out = bytearray()
    for value in values:
        _encode(out, value, 0)
    return bytes(out)


def _encode(out: bytearray, value: object, depth: int) -> None:
    # The common types by exact type first (mypy narrows on `type(x) is T`); subclasses and the rest
    # in `_encode_other`.
    if type(value) is str:
        _encode_str(out, value)
    elif type(value) is float:
        out.append(_NUMBER)
        out += _F64.pack(value)
    elif value is None:
        out.append(_NULL)
    elif type(value) is bool:
        out += b"\x01\x01" if value else b"\x01\x00"
    elif type(value) is dict:
        out.append(_OBJECT)
        _encode_props(out, value, depth)
    elif type(value) is int:
        _encode_int(out, value)
    elif type(value) is list or type(value) is tuple:
        _encode_array(out, value, depth)
    else:
        _encode_other(out, value, depth)


def _encode_other(out: bytearray, value: object, depth: int) -> None:
    # Order matters: XMLDocument is a str, ECMAArray a dict, IntEnum an int; bool cannot be subclassed.
    if isinstance(value, float):
        out.append(_NUMBER)
        out += _F64.pack(value)
    elif isinstance(value, int):
        _encode_int(out, value)
    elif isinstance(value, XMLDocument):
        data = value.encode("utf-8")
        out.append(_XML_DOCUMENT)
        out += _u32(len(data), "XML document")
        out += data
    elif isinstance(value, str):
        _encode_str(out, value)
    elif isinstance(value, ECMAArray):
        out.append(_ECMA_ARRAY)
        out += _u32(len(value), "ECMA array")
        _encode_props(out, value, depth)
    elif isinstance(value, Undefined):
        out.append(_UNDEFINED)
    elif isinstance(value, AMFDate):
        if not -0x8000 <= value.tz <= 0x7FFF:
            raise ValueError(f"AMFDate.tz={value.tz}: want a signed 16-bit number of minutes")
        out.append(_DATE)
        out += _DATE_BODY.pack(value.ms, value.tz)
    elif isinstance(value, TypedObject):
        out.append(_TYPED_OBJECT)
        out += _short_utf8(value.class_name, "class name")
        _encode_props(out, value.fields, depth)
    elif isinstance(value, Mapping):
        out.append(_OBJECT)
        _encode_props(out, value, depth)
    elif isinstance(value, list | tuple):
        _encode_array(out, value, depth)
    else:
        raise TypeError(f"cannot encode {type(value).__qualname__} as AMF0")


def _encode_int(out: bytearray, value: int) -> None:
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"int {value} is too large for an AMF0 number (a double)") from None
    out.append(_NUMBER)
    out += _F64.pack(number)


def _encode_str(out: bytearray, value: str) -> None:
    data = value.encode("utf-8")
    n = len(data)
    if n <= 0xFFFF:
        out.append(_STRING)
        out += n.to_bytes(2, "big")
    else:
        out.append(_LONG_STRING)
        out += _u32(n, "long string")
    out += data


def _encode_props(out: bytearray, props: Mapping[str, object], depth: int) -> None:
    if depth >= _MAX_ENCODE_DEPTH:
        raise ValueError(f"nesting deeper than {_MAX_ENCODE_DEPTH} levels (a cyclic value?)")
    for key, item in props.items():
        if not isinstance(key, str):
            raise TypeError(f"object key {key!r}: want str, got {type(key).__qualname__}")
        out += _short_utf8(key, "object key")
        _encode(out, item, depth + 1)
    out += _END


def _encode_array(out: bytearray, items: list[object] | tuple[object, ...], depth: int) -> None:
    if depth >= _MAX_ENCODE_DEPTH:
        raise ValueError(f"nesting deeper than {_MAX_ENCODE_DEPTH} levels (a cyclic value?)")
    out.append(_STRICT_ARRAY)
    out += _u32(len(items), "strict array")
    for item in items:
        _encode(out, item, depth + 1)


def _short_utf8(text: str, what: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError(f"{what} of {len(data)} UTF-8 bytes: AMF0 allows at most 65535")
    return len(data).to_bytes(2, "big") + data


def _u32(n: int, what: str) -> bytes:
    if n > 0xFFFFFFFF:
        raise ValueError(f"{what} of length {n} does not fit AMF0's 32-bit length")
    return n.to_bytes(4, "big")
