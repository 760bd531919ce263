"""AMF3 decoding: hand-built vectors per type, the three reference tables, limits, and fuzz."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.media.rtmp import amf0, amf3
from appliance.media.rtmp.amf0 import UNDEFINED, AMFDate, AMFError, Limits, TypedObject, XMLDocument
from tests.fuzz import examples

# -- byte builders, straight from the AMF3 spec -----------------------------------------------------


def u29(n: int) -> bytes:
    """AMF3 spec 1.3.1: 7 bits per byte with a continuation flag; the 4th byte carries 8 bits."""
    assert 0 <= n < 1 << 29
    if n < 0x80:
        return bytes([n])
    if n < 0x4000:
        return bytes([0x80 | n >> 7, n & 0x7F])
    if n < 0x200000:
        return bytes([0x80 | n >> 14, 0x80 | (n >> 7) & 0x7F, n & 0x7F])
    return bytes([0x80 | n >> 22, 0x80 | (n >> 15) & 0x7F, 0x80 | (n >> 8) & 0x7F, n & 0xFF])


def vr(text: str) -> bytes:
    """An inline UTF-8-vr string (no marker)."""
    data = text.encode()
    return u29(len(data) << 1 | 1) + data


def sref(index: int) -> bytes:
    return u29(index << 1)


def string(text: str) -> bytes:
    return b"\x06" + vr(text)


def integer(n: int) -> bytes:
    return b"\x04" + u29(n & 0x1FFFFFFF)


def dense(*items: bytes) -> bytes:
    return b"\x09" + u29(len(items) << 1 | 1) + b"\x01" + b"".join(items)


def oref(index: int) -> bytes:
    return b"\x0a" + u29(index << 1)


EMPTY = b"\x01"  # the empty UTF-8-vr string: ends dynamic members and associative parts


def dynamic_object(*pairs: tuple[str, bytes]) -> bytes:
    # 0x0B: inline object, inline traits, not externalizable, dynamic, 0 sealed members; class "".
    return b"\x0a\x0b" + EMPTY + b"".join(vr(k) + v for k, v in pairs) + EMPTY


def decode(data: bytes, limits: Limits = amf0.DEFAULT_LIMITS) -> object:
    value, end = amf3.decode_one(data, 0, limits)
    assert end == len(data)
    return value


# -- scalars ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "value"),
    [
        (b"\x00", UNDEFINED),
        (b"\x01", None),
        (b"\x02", False),
        (b"\x03", True),
        (b"\x04\x00", 0),
        (b"\x04\x7f", 127),
        (b"\x04\x81\x00", 128),
        (b"\x04\xff\x7f", 0x3FFF),
        (b"\x04\x81\x80\x00", 0x4000),
        (b"\x04\xbf\xff\xff\xff", 0x0FFFFFFF),  # largest positive 29-bit integer
        (b"\x04\xc0\x80\x80\x00", -0x10000000),  # smallest: the sign bit is bit 28
        (b"\x04\xff\xff\xff\xff", -1),
        (b"\x05" + struct.pack(">d", -2.5), -2.5),
        (b"\x06\x01", ""),
        (b"\x06\x07abc", "abc"),
        (b"\x06\x05\xc3\xa9", "é"),
        (b"\x07\x09<a/>", XMLDocument("<a/>")),
        (b"\x0b\x09<b/>", XMLDocument("<b/>")),
        (b"\x08\x01" + struct.pack(">d", 1.5e12), AMFDate(1.5e12, 0)),
        (b"\x0c\x07\x00\xff\x10", b"\x00\xff\x10"),
    ],
)
def test_scalars(wire: bytes, value: object) -> None:
    decoded = decode(wire)
    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize(
    "n", [0, 1, 127, 128, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, 0x0FFFFFFF, -1, -0x10000000]
)
def test_integer_u29_forms(n: int) -> None:
    assert decode(integer(n)) == n


# -- arrays and objects -------------------------------------------------------------------------------


def test_dense_array() -> None:
    assert decode(dense(integer(1), string("two"), b"\x01")) == [1, "two", None]
    assert decode(dense()) == []


def test_mixed_array_becomes_dict() -> None:
    # One dense item, associative part {"a": 1, "0": "lost"}: the dense item wins key "0".
    wire = b"\x09" + u29(1 << 1 | 1) + vr("a") + integer(1) + vr("0") + string("lost") + EMPTY + string("x")
    assert decode(wire) == {"0": "x", "a": 1}
    # Associative only.
    assert decode(b"\x09\x01" + vr("k") + b"\x03" + EMPTY) == {"k": True}


def test_anonymous_dynamic_object() -> None:
    assert decode(dynamic_object(("app", string("live")), ("n", integer(5)))) == {"app": "live", "n": 5}


def test_sealed_typed_object_and_traits_reference() -> None:
    # Inline traits: class "Point", 2 sealed members, not dynamic -> header 0b10_0011.
    first = b"\x0a" + u29(2 << 4 | 0b0011) + vr("Point") + vr("x") + vr("y") + integer(1) + integer(2)
    # Traits by reference to traits 0 -> header 0b01.
    second = b"\x0a" + u29(0 << 2 | 0b01) + integer(3) + integer(4)
    assert decode(dense(first, second)) == [
        TypedObject("Point", {"x": 1, "y": 2}),
        TypedObject("Point", {"x": 3, "y": 4}),
    ]


def test_sealed_and_dynamic_members() -> None:
    wire = b"\x0a" + u29(1 << 4 | 0b1011) + vr("") + vr("a") + integer(1) + vr("b") + integer(2) + EMPTY
    assert decode(wire) == {"a": 1, "b": 2}


def test_externalizable_is_rejected() -> None:
    with pytest.raises(
        AMFError, match=r"externalizable class 'flex\.messaging\.io\.ArrayCollection' not supported"
    ):
        decode(b"\x0a\x07" + vr("flex.messaging.io.ArrayCollection") + dense())


@pytest.mark.parametrize(
    ("marker", "name"), [(0x0D, "Vector.<int>"), (0x10, "Vector.<Object>"), (0x11, "Dictionary")]
)
def test_vectors_and_dictionaries_are_rejected(marker: int, name: str) -> None:
    with pytest.raises(AMFError, match=f"AMF3 {name}"):
        decode(bytes([marker, 0x01]))


def test_unknown_marker() -> None:
    with pytest.raises(AMFError, match="unknown AMF3 marker 0x12") as info:
        decode(dense(b"\x12"))
    assert info.value.offset == 3


# -- reference tables ---------------------------------------------------------------------------------


def test_string_references() -> None:
    # "" never enters the table, so reference 0 is "abc" and 1 is "de"; keys share the table.
    wire = dense(
        string(""),
        string("abc"),
        b"\x06" + sref(0),
        dynamic_object(("de", b"\x06" + sref(0))),
        b"\x06" + sref(1),
    )
    assert decode(wire) == ["", "abc", "abc", {"de": "abc"}, "de"]


def test_object_references_share_the_object() -> None:
    # Object table: 0 = outer array, 1 = the object, 2 = the date, 3 = the byte array.
    date = b"\x08\x01" + struct.pack(">d", 0.0)
    wire = dense(
        dynamic_object(("a", integer(1))), date, b"\x0c\x03z", oref(1), b"\x08" + u29(2 << 1), b"\x0c\x06"
    )
    value = decode(wire)
    assert isinstance(value, list)
    assert value[3] is value[0] and value[0] == {"a": 1}
    assert value[4] is value[1] and value[4] == AMFDate(0.0, 0)
    assert value[5] == b"z"


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"\x06\x00", "refers to string 0, but only 0 were sent"),
        (b"\x0a\x02", "reference to object 1, but only 0 were sent"),
        (b"\x07\x00", "reference to object 0, but only 0 were sent"),
        (b"\x0a\x05", "reference to traits 1, but only 0 were sent"),
        (dense(b"\x09\x00"), "reference to object 0 from inside itself"),
        (dynamic_object(("self", oref(0))), "from inside itself"),
    ],
)
def test_bad_references(wire: bytes, match: str) -> None:
    with pytest.raises(AMFError, match=match):
        decode(wire)


def test_decode_all_shares_tables() -> None:
    assert amf3.decode_all(string("abc") + b"\x06" + sref(0)) == ["abc", "abc"]
    assert amf3.decode_all(b"") == []


def test_each_avmplus_switch_has_fresh_tables() -> None:
    assert amf0.decode_all(b"\x11" + string("abc") + b"\x11" + string("abc")) == ["abc", "abc"]
    with pytest.raises(AMFError, match="refers to string 0, but only 0 were sent") as info:
        amf0.decode_all(b"\x11" + string("abc") + b"\x11\x06" + sref(0))
    assert info.value.offset == 8  # the string header after the second switch


def test_amf3_inside_amf0_containers() -> None:
    wire = (
        amf0.encode("onStatus")
        + b"\x03\x00\x04info\x11"
        + dynamic_object(("level", string("ok")))
        + b"\x00\x00\x09"
    )
    assert amf0.decode_all(wire) == ["onStatus", {"info": {"level": "ok"}}]


# -- limits and truncation ----------------------------------------------------------------------------


def test_depth_limit() -> None:
    deep = b"\x09\x03\x01" * 32 + b"\x01"
    assert decode(deep) is not None
    with pytest.raises(AMFError, match="nesting deeper than 32 levels"):
        decode(b"\x09\x03\x01" * 33 + b"\x01")
    # The AMF0 levels around a switch count too.
    with pytest.raises(AMFError, match="nesting deeper than 32 levels"):
        amf0.decode_all(b"\x0a\x00\x00\x00\x01" * 2 + b"\x11" + b"\x09\x03\x01" * 31 + b"\x01")


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"\x09" + u29(0x0FFFFFFF << 1 | 1)[:4] + b"\x01", "exceeds the limit of 65536"),
        (b"\x09" + u29(1000 << 1 | 1) + b"\x01\x01", "claims 1000 entries but only 2 bytes are left"),
        (b"\x0a" + u29(1000 << 4 | 3) + EMPTY, "claims 1000 entries"),
        (b"\x06" + u29(0x0FFFFFFF), "exceeds the limit of 1048576"),
        (b"\x0c" + u29(0x0FFFFFFF), "ByteArray of 134217727 bytes exceeds"),
        (b"\x06\x07ab", "truncated string"),
        (b"\x06\x81", "truncated string header"),
        (b"\x04\xff\xff\xff", "truncated integer"),
        (b"\x05\x00", "truncated double"),
        (b"\x06\x05\xff\xfe", "string is not valid UTF-8"),
        (dense(string("x"))[:-1], "truncated"),
        (dynamic_object(("a", b"\x01"))[:-1], "truncated"),
    ],
)
def test_malformed(wire: bytes, match: str) -> None:
    with pytest.raises(AMFError, match=match):
        decode(wire)


def test_item_and_string_limits() -> None:
    limits = Limits(max_items=2, max_string=3)
    assert decode(dense(integer(1), integer(2)), limits) == [1, 2]
    with pytest.raises(AMFError, match="AMF3 array of 3 entries exceeds the limit of 2"):
        decode(dense(integer(1), integer(2), integer(3)), limits)
    with pytest.raises(AMFError, match="AMF3 object has more than 2 entries"):
        decode(dynamic_object(("a", b"\x01"), ("b", b"\x01"), ("c", b"\x01")), limits)
    with pytest.raises(AMFError, match="AMF3 array has more than 2 entries"):
        decode(b"\x09\x01" + vr("a") + b"\x01" + vr("b") + b"\x01" + vr("c") + b"\x01" + EMPTY, limits)
    with pytest.raises(AMFError, match="AMF3 array has more than 2 entries"):
        decode(b"\x09\x05" + vr("a") + b"\x01" + EMPTY + b"\x01\x01", limits)
    with pytest.raises(AMFError, match="string of 4 bytes exceeds the limit of 3"):
        decode(string("abcd"), limits)


def test_reference_blowup_is_capped() -> None:
    # Array i (object table entry i) holds two references to array i-1.
    parts = [dense(b"\x01")] + [dense(oref(i), oref(i)) for i in range(25)]
    with pytest.raises(AMFError, match="references stand for more than 65536 values"):
        amf3.decode_all(b"".join(parts), limits=Limits(max_depth=64))
    with pytest.raises(AMFError, match="references stand for more than 3 values"):
        amf3.decode_all(b"".join(parts[:3]), limits=Limits(max_references=3))


def test_offset_checks() -> None:
    with pytest.raises(AMFError, match="offset outside"):
        amf3.decode_one(b"\x01", 2)
    assert amf3.decode_one(b"\xff\x01", 1) == (None, 2)
    assert amf3.decode_all(bytearray(b"\x06\x03x")) == ["x"]  # type: ignore[arg-type]


# -- fuzz ---------------------------------------------------------------------------------------------


def check(data: bytes) -> None:
    for decoder in (amf3.decode_all, amf0.decode_all):
        try:
            result = decoder(data, limits=Limits(max_depth=8, max_items=16, max_string=64, max_references=64))
        except AMFError as exc:
            assert 0 <= exc.offset <= len(data)
        else:
            assert isinstance(result, list)


@settings(max_examples=examples(500))
@given(st.binary(max_size=200))
def test_any_bytes_decode_to_values_or_amf_error(data: bytes) -> None:
    check(data)
    check(b"\x11" + data)


fragments = st.sampled_from(
    [
        b"\x01",
        b"\x03",
        integer(-5),
        string("ab"),
        b"\x06\x00",
        b"\x09\x05\x01",
        b"\x09\x03" + vr("k"),
        b"\x0a\x0b\x01",
        b"\x0a\x23" + vr("P") + vr("x") + vr("y"),
        b"\x0a\x01",
        b"\x0a\x02",
        b"\x08\x01" + bytes(8),
        b"\x0c\x03z",
        EMPTY,
    ]
)


@settings(max_examples=examples(500))
@given(st.lists(fragments, max_size=30))
def test_structured_garbage_decodes_to_values_or_amf_error(parts: list[bytes]) -> None:
    check(b"".join(parts))
