"""AMF0: exact bytes, round trips, references, leniency, limits, and any bytes -> values or AMFError."""

from __future__ import annotations

import contextlib
import enum
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.media.packets import Metadata
from appliance.media.rtmp import amf0
from appliance.media.rtmp.amf0 import (
    DEFAULT_LIMITS,
    UNDEFINED,
    AMFDate,
    AMFError,
    ECMAArray,
    Limits,
    TypedObject,
    XMLDocument,
    decode_all,
    decode_command_amf3,
    decode_one,
    encode,
)
from tests.fuzz import examples

# -- byte builders, straight from the AMF0 spec (independent of the encoder under test) -------------


def num(x: float) -> bytes:
    return b"\x00" + struct.pack(">d", x)


def s(text: str) -> bytes:
    data = text.encode()
    return b"\x02" + len(data).to_bytes(2, "big") + data


def key(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


END = b"\x00\x00\x09"


def obj(*pairs: tuple[str, bytes]) -> bytes:
    return b"\x03" + b"".join(key(k) + v for k, v in pairs) + END


def ecma(count: int, *pairs: tuple[str, bytes]) -> bytes:
    return b"\x08" + count.to_bytes(4, "big") + b"".join(key(k) + v for k, v in pairs) + END


def strict(*items: bytes) -> bytes:
    return b"\x0a" + len(items).to_bytes(4, "big") + b"".join(items)


def ref(index: int) -> bytes:
    return b"\x07" + index.to_bytes(2, "big")


CONNECT = {
    "app": "live",
    "type": "nonprivate",
    "flashVer": "FMLE/3.0 (compatible; Lavf59.27.100)",
    "tcUrl": "rtmp://127.0.0.1:1935/live",
}


# -- exact bytes --------------------------------------------------------------------------------------


def test_ffmpeg_connect_bytes() -> None:
    wire = encode("connect", 1.0, CONNECT)
    assert wire.startswith(
        b"\x02\x00\x07connect\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x03\x00\x03app\x02\x00\x04live"
    )
    assert wire == s("connect") + num(1.0) + obj(*((k, s(v)) for k, v in CONNECT.items()))
    assert wire.endswith(b"\x00\x05tcUrl\x02\x00\x1artmp://127.0.0.1:1935/live\x00\x00\x09")
    assert decode_all(wire) == ["connect", 1.0, CONNECT]


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0.0, "000000000000000000"),
        (1.5, "003ff8000000000000"),
        (1, "003ff0000000000000"),  # ints are numbers
        (True, "0101"),  # bool is checked before int
        (False, "0100"),
        (None, "05"),
        (UNDEFINED, "06"),
        ("", "020000"),
        ("é", "020002c3a9"),
        ({}, "03000009"),
        ([], "0a00000000"),
        ((1.0,), "0a00000001003ff0000000000000"),
        (ECMAArray(), "0800000000000009"),
        (AMFDate(0.0, -60), "0b0000000000000000ffc4"),
        (XMLDocument("<a/>"), "0f000000043c612f3e"),
        (TypedObject("T", {"x": None}), "1000015400017805000009"),
    ],
)
def test_encode_exact(value: object, wire: str) -> None:
    assert encode(value).hex() == wire


def test_bool_is_not_a_number() -> None:
    assert decode_all(encode(True, 1, False, 0)) == [True, 1.0, False, 0.0]
    assert [type(v) for v in decode_all(encode(True, 1))] == [bool, float]


def test_int_like_and_mappings() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    assert encode(Level.HIGH) == num(3.0)
    meta = Metadata({"width": 1280, "nested": {"codecs": ["avc1", "mp4a"]}})
    assert encode(meta) == obj(
        ("width", num(1280.0)), ("nested", obj(("codecs", strict(s("avc1"), s("mp4a")))))
    )
    assert decode_all(encode(meta)) == [{"width": 1280.0, "nested": {"codecs": ["avc1", "mp4a"]}}]


def test_subclasses_encode_as_their_base() -> None:
    class Name(str):
        pass

    class Seconds(float):
        pass

    class Items(list[object]):
        pass

    assert encode(Name("x"), Seconds(1.5), Items([None])) == s("x") + num(1.5) + strict(b"\x05")


def test_lengths_past_32_bits_are_rejected() -> None:
    class Huge(list[object]):
        def __len__(self) -> int:
            return 2**32

    with pytest.raises(ValueError, match="strict array of length 4294967296 does not fit"):
        encode(Huge())


def test_long_string_boundary() -> None:
    short = "a" * 0xFFFF
    long = "a" * 0x10000
    assert encode(short)[:3] == b"\x02\xff\xff"
    assert encode(long)[:5] == b"\x0c\x00\x01\x00\x00"
    assert decode_all(encode(short, long)) == [short, long]
    # Multi-byte characters count in bytes, not characters.
    wide = "é" * 0x8000
    assert encode(wide)[:1] == b"\x0c"
    assert decode_all(encode(wide)) == [wide]


def test_decoded_types() -> None:
    wire = encode(ECMAArray(a=1.0), {"b": 2.0}, AMFDate(5.0, 0), XMLDocument("<x/>"), TypedObject("C", {}))
    values = decode_all(wire)
    assert [type(v) for v in values] == [ECMAArray, dict, AMFDate, XMLDocument, TypedObject]
    assert encode(*values) == wire


def test_unsupported_marker_decodes_as_undefined() -> None:
    assert decode_all(b"\x0d" + num(2.0)) == [UNDEFINED, 2.0]


def test_empty_property_name_with_a_value_is_kept() -> None:
    assert decode_all(b"\x03" + key("") + num(1.0) + END) == [{"": 1.0}]
    assert decode_all(encode({"": 1.0, "a": ""})) == [{"": 1.0, "a": ""}]


def test_undefined_singleton() -> None:
    assert repr(UNDEFINED) == "UNDEFINED"
    assert not UNDEFINED
    assert amf0.Undefined.UNDEFINED is UNDEFINED
    assert decode_all(b"\x06")[0] is UNDEFINED


def test_reprs() -> None:
    assert repr(ECMAArray(a=1)) == "ECMAArray({'a': 1})"
    assert repr(XMLDocument("<a/>")) == "XMLDocument('<a/>')"


# -- ECMA arrays: count ignored, end marker honoured --------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 7, 0xFFFFFFFF])
def test_ecma_array_count_is_ignored(count: int) -> None:
    # librtmp and old Flash encoders write 0 or a wrong count and terminate with 00 00 09.
    wire = s("onMetaData") + ecma(count, ("duration", num(0.0)), ("width", num(1280.0))) + s("after")
    values = decode_all(wire)
    assert values == ["onMetaData", {"duration": 0.0, "width": 1280.0}, "after"]
    assert type(values[1]) is ECMAArray


def test_ecma_array_round_trip_keeps_marker() -> None:
    meta = ECMAArray(duration=0.0, encoder="Lavf", stereo=True)
    wire = encode("onMetaData", meta)
    assert wire[len(s("onMetaData"))] == 0x08
    assert wire[len(s("onMetaData")) + 1 : len(s("onMetaData")) + 5] == b"\x00\x00\x00\x03"
    (_, back) = decode_all(wire)
    assert type(back) is ECMAArray and back == meta


@pytest.mark.parametrize(
    "wire",
    [
        b"\x03" + key("a") + num(1.0),  # object cut before its end marker
        b"\x03" + key("a") + num(1.0) + b"\x00\x00",
        b"\x08\x00\x00\x00\x01" + key("a") + num(1.0),
        b"\x10" + key("T") + key("a") + num(1.0),
        b"\x03" + key("ab")[:3],
    ],
)
def test_truncated_container_is_an_error(wire: bytes) -> None:
    with pytest.raises(AMFError, match="truncated"):
        decode_all(wire)


def test_every_strict_prefix_of_a_value_is_an_error() -> None:
    wire = encode(
        {
            "a": [1.0, "x" * 300, ECMAArray(b=None)],
            "d": AMFDate(1.0, 0),
            "t": TypedObject("T", {"u": UNDEFINED}),
        }
    )
    for cut in range(len(wire)):
        with pytest.raises(AMFError):
            decode_one(wire[:cut])


# -- references ---------------------------------------------------------------------------------------


def test_reference_resolves_to_the_same_object() -> None:
    wire = obj(("a", num(1.0))) + ref(0)
    first, second = decode_all(wire)
    assert first == {"a": 1.0} and second is first


def test_reference_table_counts_objects_ecma_and_strict_arrays_only() -> None:
    # Table: 0 = outer strict array, 1 = object, 2 = ECMA array, 3 = typed object; strings and dates
    # do not enter it.
    inner = obj(("k", s("v")))
    wire = strict(
        inner,
        s("str"),
        b"\x0b" + struct.pack(">dh", 0.0, 0),
        ecma(0, ("e", num(2.0))),
        b"\x10" + key("T") + END,
        ref(2),
        ref(1),
        ref(3),
    )
    (outer,) = decode_all(wire)
    assert isinstance(outer, list)
    assert outer[5] is outer[3] and type(outer[5]) is ECMAArray
    assert outer[6] is outer[0]
    assert outer[7] is outer[4]


def test_reference_to_enclosing_object_is_rejected() -> None:
    with pytest.raises(AMFError, match="cycle") as info:
        decode_all(b"\x03" + key("self") + ref(0) + END)
    assert info.value.offset == 7


def test_reference_out_of_range() -> None:
    with pytest.raises(AMFError, match="reference to object 1, but only 1 were sent"):
        decode_all(obj() + ref(1))
    with pytest.raises(AMFError, match="only 0 were sent"):
        decode_all(ref(0))


def test_reference_table_spans_the_message_but_not_decode_one() -> None:
    wire = obj() + ref(0)
    assert len(decode_all(wire)) == 2
    _, end = decode_one(wire)
    with pytest.raises(AMFError, match="only 0 were sent"):
        decode_one(wire, end)


def test_reference_blowup_is_capped() -> None:
    # Each array holds two references to the previous one: k arrays stand for 2**k values.
    parts = [strict(num(0.0))]
    parts += [strict(ref(i), ref(i)) for i in range(30)]
    wire = b"".join(parts)
    with pytest.raises(AMFError, match="references stand for more than"):
        decode_all(wire, limits=Limits(max_depth=128))
    # A few levels fit the default budget.
    assert len(decode_all(b"".join(parts[:8]))) == 8


def test_reference_depth_counts_the_target() -> None:
    # Array i holds a reference to array i-1: nesting grows by one per array without nested bytes.
    parts = [strict()] + [strict(ref(i)) for i in range(40)]
    with pytest.raises(AMFError, match="reference nests deeper than 32 levels"):
        decode_all(b"".join(parts))
    assert len(decode_all(b"".join(parts[:32]))) == 32


# -- limits and malformed input -----------------------------------------------------------------------


def nested(depth: int) -> bytes:
    return b"\x0a\x00\x00\x00\x01" * depth + b"\x05"


def test_depth_limit() -> None:
    assert decode_one(nested(32))[1] == len(nested(32))
    with pytest.raises(AMFError, match="nesting deeper than 32 levels"):
        decode_all(nested(33))
    with pytest.raises(AMFError, match="nesting deeper than 2 levels"):
        decode_all(encode({"a": {"b": {}}}), limits=Limits(max_depth=2))
    # Deep garbage must not reach Python's recursion limit.
    with pytest.raises(AMFError, match="nesting"):
        decode_all(b"\x03\x00\x01a" * 100_000)


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"\x0a\xff\xff\xff\xff\x05", "exceeds the limit of 65536"),
        (b"\x0a\x00\x01\x00\x00\x05\x05", "claims 65536 entries but only 2 bytes are left"),
        (b"\x0c\x7f\xff\xff\xff", "exceeds the limit of 1048576"),
        (b"\x0c\x00\x00\x10\x00abc", "truncated long string: need 4096 bytes, 3 left"),
        (b"\x0f\xff\xff\xff\xff", "XML document of 4294967295 bytes exceeds"),
        (b"\x02\x00\x05ab", "truncated string"),
        (b"\x00\x00\x00", "truncated number"),
        (b"\x0b" + b"\x00" * 9, "truncated date"),
        (b"\x01", "truncated boolean"),
        (b"\x07\x00", "truncated reference"),
    ],
)
def test_declared_sizes_are_checked_before_allocating(wire: bytes, match: str) -> None:
    with pytest.raises(AMFError, match=match):
        decode_all(wire)


def test_string_and_item_limits() -> None:
    limits = Limits(max_string=4, max_items=2)
    assert decode_all(encode("abcd", {"a": 1, "b": 2}, [1, 2]), limits=limits) == [
        "abcd",
        {"a": 1, "b": 2},
        [1, 2],
    ]
    with pytest.raises(AMFError, match="string of 5 bytes exceeds the limit of 4"):
        decode_all(encode("abcde"), limits=limits)
    with pytest.raises(AMFError, match="property name of 5 bytes"):
        decode_all(encode({"abcde": 1}), limits=limits)
    with pytest.raises(AMFError, match="object has more than 2 entries"):
        decode_all(encode({"a": 1, "b": 2, "c": 3}), limits=limits)
    with pytest.raises(AMFError, match="object has more than 2 entries"):
        decode_all(encode(ECMAArray(a=1, b=2, c=3)), limits=limits)
    with pytest.raises(AMFError, match="strict array of 3 entries exceeds the limit of 2"):
        decode_all(encode([1, 2, 3]), limits=limits)


def test_limits_validation() -> None:
    assert Limits() == DEFAULT_LIMITS
    d = DEFAULT_LIMITS
    assert (d.max_depth, d.max_string, d.max_items, d.max_references) == (32, 1 << 20, 65536, 65536)
    with pytest.raises(ValueError, match="max_depth=0"):
        Limits(max_depth=0)
    with pytest.raises(ValueError, match="max_depth=1000"):
        Limits(max_depth=1000)
    with pytest.raises(ValueError, match="max_items=-1"):
        Limits(max_items=-1)


def test_invalid_utf8() -> None:
    with pytest.raises(AMFError, match="string is not valid UTF-8") as info:
        decode_all(num(1.0) + b"\x02\x00\x03a\xffb")
    assert info.value.offset == 13
    with pytest.raises(AMFError, match="property name is not valid UTF-8"):
        decode_all(b"\x03\x00\x01\x80\x05" + END)


@pytest.mark.parametrize(
    ("marker", "match"),
    [
        (0x04, "movieclip \\(marker 0x04\\) not supported"),
        (0x0E, "recordset \\(marker 0x0e\\) not supported"),
        (0x09, "object-end marker outside an object"),
        (0x12, "unknown AMF0 marker 0x12"),
        (0xFF, "unknown AMF0 marker 0xff"),
    ],
)
def test_unsupported_markers(marker: int, match: str) -> None:
    with pytest.raises(AMFError, match=match) as info:
        decode_all(num(1.0) + bytes([marker]) + b"\x00" * 8)
    assert info.value.offset == 9
    assert "(at byte 9)" in str(info.value)


def test_error_type() -> None:
    err = AMFError("bad", 3)
    assert isinstance(err, ValueError)
    assert (err.offset, str(err)) == (3, "bad (at byte 3)")


def test_decode_one_offsets() -> None:
    wire = encode("a", 2.0, {"c": None})
    value, pos = decode_one(wire)
    assert (value, pos) == ("a", 4)
    value, pos = decode_one(wire, pos)
    assert (value, pos) == (2.0, 13)
    assert decode_one(wire, pos) == ({"c": None}, len(wire))
    with pytest.raises(AMFError, match="truncated AMF0 marker"):
        decode_one(wire, len(wire))
    with pytest.raises(AMFError, match="offset outside"):
        decode_one(wire, -1)
    assert decode_all(b"") == []


def test_bytes_like_input() -> None:
    wire = encode("x", {"y": "z"})
    assert decode_all(bytearray(wire)) == decode_all(memoryview(wire)) == ["x", {"y": "z"}]  # type: ignore[arg-type]


# -- command AMF3 (type 17) ---------------------------------------------------------------------------


def test_command_amf3_with_and_without_format_byte() -> None:
    body = encode("connect", 1.0, CONNECT)
    assert decode_command_amf3(b"\x00" + body) == ["connect", 1.0, CONNECT]
    assert decode_command_amf3(body) == ["connect", 1.0, CONNECT]
    assert decode_command_amf3(b"") == []
    assert decode_command_amf3(b"\x00") == []


def test_command_amf3_with_switched_values() -> None:
    # "createStream", 2.0, null, then an AMF3 object {app: "live"} and the AMF3 integer 7.
    amf3_object = b"\x0a\x0b\x01" + b"\x07app" + b"\x06\x09live" + b"\x01"
    payload = b"\x00" + s("createStream") + num(2.0) + b"\x05" + b"\x11" + amf3_object + b"\x11\x04\x07"
    assert decode_command_amf3(payload) == ["createStream", 2.0, None, {"app": "live"}, 7]
    with pytest.raises(AMFError, match=r"\(at byte 1\)"):
        decode_command_amf3(b"\x00\x04")  # offsets count the format byte


# -- encoding errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, object(), 1j, bytearray(b"x")])
def test_unencodable_types(value: object) -> None:
    with pytest.raises(TypeError, match=type(value).__qualname__):
        encode(value)


def test_encoding_value_errors() -> None:
    with pytest.raises(TypeError, match="object key 1: want str, got int"):
        encode({1: "x"})
    with pytest.raises(ValueError, match="object key of 65536 UTF-8 bytes"):
        encode({"k" * 0x10000: 1})
    with pytest.raises(ValueError, match="class name of 65536"):
        encode(TypedObject("C" * 0x10000, {}))
    with pytest.raises(ValueError, match="too large for an AMF0 number"):
        encode(10**400)
    with pytest.raises(ValueError, match=r"AMFDate\.tz=40000"):
        encode(AMFDate(0.0, 40000))
    with pytest.raises(UnicodeEncodeError):
        encode("\ud800")
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="nesting deeper than 128 levels"):
        encode(cyclic)
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="a cyclic value"):
        encode(loop)


def test_encoding_big_ints_is_lossy_but_works() -> None:
    assert decode_all(encode(2**53 + 1)) == [float(2**53)]


# -- properties ---------------------------------------------------------------------------------------

keys = st.text(max_size=8)
scalars = st.one_of(
    st.none(),
    st.just(UNDEFINED),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.builds(AMFDate, st.floats(allow_nan=False), st.integers(-0x8000, 0x7FFF)),
    st.builds(XMLDocument, st.text(max_size=10)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4).map(ECMAArray),
        st.builds(TypedObject, st.text(max_size=8), st.dictionaries(keys, inner, max_size=3)),
    ),
    max_leaves=20,
)


def same(a: object, b: object) -> bool:
    """Equal, and of the same types all the way down (ECMAArray vs dict, XMLDocument vs str)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, TypedObject) and isinstance(b, TypedObject):
        return a.class_name == b.class_name and same(a.fields, b.fields)
    return a == b


@settings(max_examples=examples(300))
@given(st.lists(values, max_size=4))
def test_round_trip(vals: list[object]) -> None:
    decoded = decode_all(encode(*vals))
    assert same(decoded, vals)


@settings(max_examples=examples(100))
@given(st.lists(st.one_of(st.floats(), st.integers(-(2**60), 2**60)), max_size=5))
def test_numbers_round_trip_bitwise(nums: list[float]) -> None:
    wire = encode(*nums)
    assert encode(*decode_all(wire)) == wire
    for n, back in zip(nums, decode_all(wire), strict=True):
        assert type(back) is float
        assert back == float(n) or (math.isnan(n) and math.isnan(back))


def check_decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    try:
        result = decode_all(data, limits=limits)
    except AMFError as exc:
        assert 0 <= exc.offset <= len(data)
    else:
        assert isinstance(result, list)
    with contextlib.suppress(AMFError):
        decode_command_amf3(data, limits)


@settings(max_examples=examples(500))
@given(st.binary(max_size=200))
def test_any_bytes_decode_to_values_or_amf_error(data: bytes) -> None:
    check_decode(data)


@settings(max_examples=examples(500))
@given(values, st.data())
def test_mutated_encodings_decode_to_values_or_amf_error(value: object, data: st.DataObject) -> None:
    wire = bytearray(encode(value))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(wire)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = data.draw(st.integers(0, 255))
        if action == "insert" or pos == len(wire):
            wire[pos:pos] = bytes([byte])
        elif action == "flip":
            wire[pos] = byte
        else:
            del wire[pos]
    check_decode(bytes(wire), Limits(max_depth=4, max_string=64, max_items=8, max_references=16))
