"""AMF3 decoding (Adobe AMF 3 specification, January 2013): the subset RTMP peers send.

Theory of operation
-------------------
AMF3 appears in RTMP in two places: inside AMF0 after the avmplus-object marker 0x11 (AMF0 spec 3.1: the
next value is AMF3), which Flash Player 9+ uses for the arguments of type-17 command messages, and as
whole type-15 data messages. This module only decodes; the appliance answers in AMF0, which every peer
understands.

AMF3 shrinks repeated data with three reference tables, each filled in order of appearance (AMF3 spec
2.1): strings (non-empty ones only), objects (XML, dates, arrays, objects and byte arrays) and object
traits (class name, sealed member names, dynamic flag). Counts and lengths are U29: an unsigned 29-bit
integer in 1 to 4 bytes (spec 1.3.1). A value header's low bit tells an inline value (1) from a reference
(0) into the matching table.

Each avmplus-object switch in AMF0 starts with empty tables (as Red5 reads them): every switched value is
self-contained.

Decoded types: undefined -> `UNDEFINED`, null -> None, false/true -> bool, integer -> int (29-bit signed),
double -> float, string -> str, XMLDocument and XML -> `XMLDocument`, date -> `AMFDate(ms, 0)`, array ->
list when it has only a dense part, else a dict with the dense items under the keys "0", "1", ... (an
associative entry with the same key loses to the dense item), object -> dict for anonymous objects or
`TypedObject` for a class name, ByteArray -> bytes. Externalizable objects (whose bytes only the class
itself can read), vectors and dictionaries raise `AMFError`.

Limits and references work as in `appliance.media.rtmp._amf`: a reference shares the earlier Python
object, costs the number of values it stands for against `Limits.max_references`, and may not point into
an object still being decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.media.rtmp._amf import (
    DEFAULT_LIMITS,
    UNDEFINED,
    AMFDate,
    AMFError,
    Limits,
    Reader,
    TypedObject,
    XMLDocument,
)

__all__ = ["decode_all", "decode_one", "decode_value"]

_UNDEFINED = 0x00
_NULL = 0x01
_FALSE = 0x02
_TRUE = 0x03
_INTEGER = 0x04
_DOUBLE = 0x05
_STRING = 0x06
_XML_DOC = 0x07
_DATE = 0x08
_ARRAY = 0x09
_OBJECT = 0x0A
_XML = 0x0B
_BYTE_ARRAY = 0x0C
_UNSUPPORTED = {
    0x0D: "Vector.<int>",
    0x0E: "Vector.<uint>",
    0x0F: "Vector.<Number>",
    0x10: "Vector.<Object>",
    0x11: "Dictionary",
}


@dataclass(frozen=True, slots=True)
class _Traits:
    class_name: str
    sealed: tuple[str, ...]
    dynamic: bool


class _Decoder:
    """One AMF3 context: the reference tables over a shared `Reader`."""

    __slots__ = ("_heights", "_objects", "_r", "_sizes", "_strings", "_traits")

    def __init__(self, reader: Reader) -> None:
        self._r = reader
        self._strings: list[str] = []
        self._traits: list[_Traits] = []
        # The object table with each entry's size in values and height in levels (see Reader); size -1
        # marks an array or object whose members are still being decoded.
        self._objects: list[object] = []
        self._sizes: list[int] = []
        self._heights: list[int] = []

    def value(self) -> object:
        r = self._r
        at = r.pos
        marker = r.u8("AMF3 marker")
        r.values += 1
        if marker == _STRING:
            return self._string("string")
        if marker == _INTEGER:
            n = self._u29("integer")
            return n - 0x20000000 if n & 0x10000000 else n  # 29-bit two's complement
        if marker == _DOUBLE:
            return r.f64("double")
        if marker == _OBJECT:
            return self._object(at)
        if marker == _ARRAY:
            return self._array(at)
        if marker == _NULL:
            return None
        if marker == _TRUE:
            return True
        if marker == _FALSE:
            return False
        if marker == _UNDEFINED:
            return UNDEFINED
        if marker in (_XML_DOC, _XML, _DATE, _BYTE_ARRAY):
            return self._scalar_object(marker, at)
        name = _UNSUPPORTED.get(marker)
        if name is not None:
            raise AMFError(f"AMF3 {name} (marker 0x{marker:02x}) not supported", at)
        raise AMFError(f"unknown AMF3 marker 0x{marker:02x}", at)

    # -- primitives -----------------------------------------------------------------------------------

    def _u29(self, what: str) -> int:
        # Spec 1.3.1: up to three bytes of 7 bits with a continuation flag, then one of 8 bits.
        r = self._r
        data = r.data
        pos = r.pos
        value = 0
        for _ in range(3):
            if pos >= len(data):
                raise AMFError(f"truncated {what}", pos)
            byte = data[pos]
            pos += 1
            if byte < 0x80:
                r.pos = pos
                return (value << 7) | byte
            value = (value << 7) | (byte & 0x7F)
        if pos >= len(data):
            raise AMFError(f"truncated {what}", pos)
        r.pos = pos + 1
        return (value << 8) | data[pos]

    def _string(self, what: str) -> str:
        at = self._r.pos
        header = self._u29(f"{what} header")
        if not header & 1:
            index = header >> 1
            if index >= len(self._strings):
                raise AMFError(
                    f"{what} refers to string {index}, but only {len(self._strings)} were sent", at
                )
            self._r.charge_reference(1, 0, at)
            return self._strings[index]
        text = self._r.text(header >> 1, what)
        if text:  # spec 3.8: the empty string is never sent by reference, so never enters the table
            self._strings.append(text)
        return text

    # -- the object table -----------------------------------------------------------------------------

    def _reference(self, index: int, at: int) -> object:
        if index >= len(self._objects):
            raise AMFError(f"reference to object {index}, but only {len(self._objects)} were sent", at)
        size = self._sizes[index]
        if size < 0:
            raise AMFError(f"reference to object {index} from inside itself (a cycle)", at)
        self._r.charge_reference(size, self._heights[index], at)
        return self._objects[index]

    def _reserve(self) -> int:
        self._objects.append(None)
        self._sizes.append(-1)
        self._heights.append(0)
        return len(self._objects) - 1

    def _fill(self, index: int, value: object, size_height: tuple[int, int]) -> None:
        self._objects[index] = value
        self._sizes[index], self._heights[index] = size_height

    def _scalar_object(self, marker: int, at: int) -> object:
        # XMLDocument, XML, Date and ByteArray: by reference or inline, and no members.
        header = self._u29("header")
        if not header & 1:
            return self._reference(header >> 1, at)
        value: object
        if marker == _DATE:
            value = AMFDate(self._r.f64("date"), 0)  # the rest of the header is unused (spec 3.10)
        elif marker == _BYTE_ARRAY:
            value = self._r.raw(header >> 1, "ByteArray")
        else:
            value = XMLDocument(self._r.text(header >> 1, "XML"))
        self._fill(self._reserve(), value, (1, 0))
        return value

    def _array(self, at: int) -> object:
        r = self._r
        header = self._u29("array header")
        if not header & 1:
            return self._reference(header >> 1, at)
        dense_count = header >> 1
        r.check_count(dense_count, 1, "AMF3 array", at)
        mark = r.open_container(at)
        index = self._reserve()
        assoc: dict[str, object] = {}
        while True:
            key = self._string("array key")
            if not key:
                break
            r.check_items(len(assoc) + 1, "AMF3 array", at)
            assoc[key] = self.value()
        dense = [self.value() for _ in range(dense_count)]
        result: object
        if assoc:
            r.check_items(len(assoc) + dense_count, "AMF3 array", at)
            mixed: dict[str, object] = {str(i): item for i, item in enumerate(dense)}
            for key, item in assoc.items():
                mixed.setdefault(key, item)
            result = mixed
        else:
            result = dense
        self._fill(index, result, r.close_container(mark))
        return result

    def _object(self, at: int) -> object:
        r = self._r
        header = self._u29("object header")
        if not header & 1:
            return self._reference(header >> 1, at)
        traits = self._read_traits(header, at)
        r.check_count(len(traits.sealed), 1, "AMF3 object", at)
        mark = r.open_container(at)
        index = self._reserve()
        fields: dict[str, object] = {}
        for name in traits.sealed:
            fields[name] = self.value()
        if traits.dynamic:
            while True:
                key = self._string("dynamic member name")
                if not key:
                    break
                r.check_items(len(fields) + 1, "AMF3 object", at)
                fields[key] = self.value()
        result: object = TypedObject(traits.class_name, fields) if traits.class_name else fields
        self._fill(index, result, r.close_container(mark))
        return result

    def _read_traits(self, header: int, at: int) -> _Traits:
        # Spec 3.12: bit 1 clear = traits by reference; bit 2 set = externalizable; bit 3 = dynamic;
        # the rest counts the sealed members.
        if not header & 2:
            index = header >> 2
            if index >= len(self._traits):
                raise AMFError(f"reference to traits {index}, but only {len(self._traits)} were sent", at)
            return self._traits[index]
        class_name = self._string("class name")
        if header & 4:
            raise AMFError(f"externalizable class {class_name!r} not supported", at)
        sealed_count = header >> 4
        self._r.check_count(sealed_count, 1, "AMF3 sealed member list", at)
        sealed = tuple(self._string("sealed member name") for _ in range(sealed_count))
        traits = _Traits(class_name, sealed, bool(header & 8))
        self._traits.append(traits)
        return traits


def decode_value(reader: Reader) -> object:
    """Decode one AMF3 value at `reader.pos` with fresh reference tables (for the AMF0 switch).

    Args:
        reader: The AMF0 decoder's reader; limits and counters carry over.

    Returns:
        The value; `reader.pos` is advanced past it.

    Raises:
        AMFError: Malformed, unsupported or past a limit.
    """
    return _Decoder(reader).value()


def decode_one(data: bytes, offset: int = 0, limits: Limits = DEFAULT_LIMITS) -> tuple[object, int]:
    """Decode the AMF3 value at `offset`.

    Args:
        data: The buffer.
        offset: Where the value's marker is.
        limits: Caps for this call.

    Returns:
        The value and the offset just past it.

    Raises:
        AMFError: Malformed, truncated, unsupported or past a limit.
    """
    reader = _reader(data, offset, limits)
    value = _Decoder(reader).value()
    return value, reader.pos


def decode_all(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> list[object]:
    """Decode AMF3 values up to the end of `data`, sharing one set of reference tables.

    Args:
        data: The buffer (e.g. a type-15 data message after its format byte).
        limits: Caps for this call.

    Returns:
        The values in order (empty for empty data).

    Raises:
        AMFError: Malformed, truncated, unsupported or past a limit.
    """
    reader = _reader(data, 0, limits)
    decoder = _Decoder(reader)
    values: list[object] = []
    while reader.pos < len(reader.data):
        values.append(decoder.value())
    return values


def _reader(data: bytes, offset: int, limits: Limits) -> Reader:
    if not isinstance(data, bytes):
        data = bytes(data)  # bytearray/memoryview: slices must decode as text
    if not 0 <= offset <= len(data):
        raise AMFError(f"offset outside the {len(data)}-byte buffer", offset)
    return Reader(data, offset, limits)
