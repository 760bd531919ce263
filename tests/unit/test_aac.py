"""AAC AudioSpecificConfig: configs from a real encoder, HE-AAC signalling, edge cases, round trips."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.media.aac import (
    AAC_SAMPLE_RATES,
    aac_object_type_name,
    build_audio_specific_config,
    codec_config_from_asc,
    parse_audio_specific_config,
)
from appliance.media.bitreader import BitWriter, CodecParseError
from appliance.media.packets import Codec, Kind
from tests.fuzz import examples

# Real configs: the extradata (esds DecoderSpecificInfo) of MP4 files written by ffmpeg 5.1.9's native AAC
# encoder, read with PyAV as `av.open(path).streams[0].codec_context.extradata.hex()`, from
# `ffmpeg -f lavfi -i sine=frequency=440:sample_rate=RATE -t 0.2 ARGS -c:a aac out.mp4`. FFmpeg appends
# a backward-compatible "no SBR" sync extension (0x2b7, object type 5, sbrPresentFlag 0).

# RATE 44100, -ac 2
LC_44100_STEREO = bytes.fromhex("121056e500")
# RATE 48000, -ac 1
LC_48000_MONO = bytes.fromhex("118856e500")
# RATE 48000, -ac 6
LC_48000_5_1 = bytes.fromhex("11b056e500")
# RATE 32000, -af aformat=channel_layouts=quad -aac_pce 1: channel configuration 0 and a program config
# element (two channel pairs, front and back) with the comment "Lavc59.37.100", then the sync extension.
LC_32000_QUAD_PCE = bytes.fromhex("12800544040021100d4c61766335392e33372e31303056e500")
# RATE 32000, -af aformat=channel_layouts=7.1 -aac_pce 1
LC_32000_7_1_PCE = bytes.fromhex("1280054848002000c6400d4c61766335392e33372e31303056e500")

REAL = {
    "stereo": (LC_44100_STEREO, 44100, 2),
    "mono": (LC_48000_MONO, 48000, 1),
    "5.1": (LC_48000_5_1, 48000, 6),
    "quad": (LC_32000_QUAD_PCE, 32000, 4),
    "7.1": (LC_32000_7_1_PCE, 32000, 8),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_configs(name: str) -> None:
    data, rate, channels = REAL[name]
    asc = parse_audio_specific_config(data)
    assert (asc.object_type, asc.object_type_name, asc.sample_rate, asc.channels) == (
        2,
        "AAC-LC",
        rate,
        channels,
    )
    assert (asc.sbr, asc.ps, asc.extension_sample_rate, asc.frame_length) == (False, False, None, 1024)
    assert (asc.output_sample_rate, asc.output_channels) == (rate, channels)
    config = codec_config_from_asc(data)
    assert (config.kind, config.codec, config.data) == (Kind.AUDIO, Codec.AAC, data)
    assert (config.sample_rate, config.channels, config.profile) == (rate, channels, "AAC-LC")
    assert config.width is None and config.level is None


def test_real_configs_without_the_extension() -> None:
    # The plain 2-byte form most encoders write.
    assert parse_audio_specific_config(LC_44100_STEREO[:2]) == parse_audio_specific_config(LC_44100_STEREO)
    assert parse_audio_specific_config(bytes.fromhex("1190")).channels == 2


# -- HE-AAC ----------------------------------------------------------------------------------------------


def test_explicit_he_aac() -> None:
    # Object type 5, core 24 kHz stereo, SBR output 48 kHz, core object type 2 (ISO/IEC 14496-3 1.6.5.2).
    asc = parse_audio_specific_config(bytes.fromhex("2b118800"))
    assert (asc.object_type, asc.sbr, asc.ps) == (2, True, False)
    assert (asc.sample_rate, asc.extension_sample_rate, asc.output_sample_rate) == (24000, 48000, 48000)
    assert (asc.channels, asc.output_channels, asc.object_type_name) == (2, 2, "HE-AAC")
    config = codec_config_from_asc(bytes.fromhex("2b118800"))
    assert (config.sample_rate, config.channels, config.profile) == (48000, 2, "HE-AAC")


def test_explicit_he_aac_v2() -> None:
    # Object type 29: a mono 24 kHz core that SBR and parametric stereo make 48 kHz stereo.
    asc = parse_audio_specific_config(bytes.fromhex("eb098800"))
    assert (asc.object_type, asc.sbr, asc.ps, asc.channels) == (2, True, True, 1)
    assert (asc.output_sample_rate, asc.output_channels, asc.object_type_name) == (48000, 2, "HE-AACv2")
    config = codec_config_from_asc(bytes.fromhex("eb098800"))
    assert (config.sample_rate, config.channels, config.profile) == (48000, 2, "HE-AACv2")


def backward_compatible(*, core_index: int, channels: int, sbr_index: int, ps: bool | None) -> bytes:
    """AAC-LC then sync extensions 0x2b7 (SBR) and, unless ps is None, 0x548 (PS) (1.6.5.3)."""
    w = BitWriter()
    w.write_bits(2, 5)
    w.write_bits(core_index, 4)
    w.write_bits(channels, 4)
    w.write_bits(0, 3)
    w.write_bits(0x2B7, 11)
    w.write_bits(5, 5)
    w.write_bit(1)
    w.write_bits(sbr_index, 4)
    if ps is not None:
        w.write_bits(0x548, 11)
        w.write_bit(ps)
    return w.to_bytes()


def test_backward_compatible_sbr_and_ps() -> None:
    he = parse_audio_specific_config(backward_compatible(core_index=7, channels=2, sbr_index=4, ps=None))
    assert (he.object_type_name, he.sample_rate, he.output_sample_rate, he.output_channels) == (
        "HE-AAC",
        22050,
        44100,
        2,
    )
    v2 = parse_audio_specific_config(backward_compatible(core_index=6, channels=1, sbr_index=3, ps=True))
    assert (v2.object_type_name, v2.output_sample_rate, v2.output_channels) == ("HE-AACv2", 48000, 2)
    no_ps = parse_audio_specific_config(backward_compatible(core_index=6, channels=1, sbr_index=3, ps=False))
    assert (no_ps.object_type_name, no_ps.output_channels) == ("HE-AAC", 1)
    # A different sync word after the core config is not an extension.
    other = bytearray(backward_compatible(core_index=7, channels=2, sbr_index=4, ps=None))
    other[2] ^= 0x40
    assert parse_audio_specific_config(bytes(other)).sbr is False


# -- hand-made edge cases --------------------------------------------------------------------------------


def test_explicit_sampling_frequency() -> None:
    # Index 15: a 24-bit frequency follows (here 37800 Hz, CD-ROM XA audio).
    w = BitWriter()
    w.write_bits(2, 5)
    w.write_bits(15, 4)
    w.write_bits(37800, 24)
    w.write_bits(2, 4)
    w.write_bits(0, 3)
    asc = parse_audio_specific_config(w.to_bytes())
    assert (asc.sampling_frequency_index, asc.sample_rate, asc.channels) == (15, 37800, 2)
    assert build_audio_specific_config(2, 37800, 2) == w.to_bytes()
    with pytest.raises(CodecParseError, match="explicit sampling frequency 0"):
        parse_audio_specific_config(bytes([0x17, 0x80, 0x00, 0x00, 0x10]))


def test_escaped_object_type() -> None:
    # 31 escapes to 32 + 6 bits: 39 is ER AAC-ELD. Its specific config is not followed.
    w = BitWriter()
    w.write_bits(31, 5)
    w.write_bits(39 - 32, 6)
    w.write_bits(3, 4)
    w.write_bits(1, 4)
    asc = parse_audio_specific_config(w.to_bytes())
    assert (asc.object_type, asc.object_type_name, asc.sample_rate, asc.channels) == (
        39,
        "ER AAC-ELD",
        48000,
        1,
    )
    assert asc.frame_length is None


def test_program_config_element_alignment() -> None:
    # A PCE (one front SCE, one back CPE, one LFE), its byte alignment and a comment, then SBR signalling:
    # SBR is only found if the alignment and comment were skipped exactly.
    w = BitWriter()
    w.write_bits(2, 5)
    w.write_bits(3, 4)
    w.write_bits(0, 4)  # channelConfiguration 0
    w.write_bits(0, 3)  # GASpecificConfig
    w.write_bits(0, 4 + 2)
    w.write_bits(3, 4)  # sampling_frequency_index in the PCE
    for count in (1, 0, 1):
        w.write_bits(count, 4)  # front, side, back element counts
    w.write_bits(1, 2)  # lfe
    w.write_bits(1, 3)  # assoc data
    w.write_bits(1, 4)  # valid cc
    for present, bits in ((1, 4), (1, 4), (1, 3)):
        w.write_bit(present)
        w.write_bits(0, bits)
    w.write_bit(0)  # front: SCE
    w.write_bits(0, 4)
    w.write_bit(1)  # back: CPE
    w.write_bits(1, 4)
    w.write_bits(0, 4 + 4 + 5)  # lfe, assoc data, valid cc elements
    w.write_bits(0, -w.bit_length % 8)
    w.write_bits(2, 8)
    w.write_bits(int.from_bytes(b"hi", "big"), 16)
    w.write_bits(0x2B7, 11)
    w.write_bits(5, 5)
    w.write_bit(1)
    w.write_bits(0, 4)  # 96 kHz
    asc = parse_audio_specific_config(w.to_bytes())
    assert (asc.channel_configuration, asc.channels, asc.sbr, asc.output_sample_rate) == (0, 4, True, 96000)


def test_unknown_channels() -> None:
    # A reserved channel configuration, and a PCE cut short: the config parses, the count is unknown.
    assert parse_audio_specific_config(bytes([0x12, 0x40])).channels is None  # configuration 8
    asc = parse_audio_specific_config(LC_32000_QUAD_PCE[:4])
    assert (asc.channel_configuration, asc.channels, asc.sample_rate) == (0, None, 32000)
    assert codec_config_from_asc(LC_32000_QUAD_PCE[:4]).channels is None


def test_program_config_element_without_channels() -> None:
    w = BitWriter()
    w.write_bits(2, 5)
    w.write_bits(4, 4)
    w.write_bits(0, 4)  # channelConfiguration 0
    w.write_bits(0, 3)
    w.write_bits(0, 10 + 4 + 4 + 4 + 2 + 3 + 4 + 3)  # a PCE with no elements and no mixdowns
    w.write_bits(0, -w.bit_length % 8)
    w.write_bits(0, 8)  # no comment
    asc = parse_audio_specific_config(w.to_bytes())
    assert (asc.sample_rate, asc.channels, asc.frame_length) == (44100, None, None)


def test_explicit_sbr_over_bsac() -> None:
    # HE-AAC over ER BSAC (22): an extensionChannelConfiguration follows the core object type.
    w = BitWriter()
    w.write_bits(5, 5)
    w.write_bits(6, 4)
    w.write_bits(2, 4)
    w.write_bits(3, 4)
    w.write_bits(22, 5)
    w.write_bits(2, 4)  # extensionChannelConfiguration
    w.write_bits(0b001, 3)  # GASpecificConfig with extensionFlag
    w.write_bits(0, 16 + 1 + 2)  # numOfSubFrame, layer_length, extensionFlag3, epConfig
    asc = parse_audio_specific_config(w.to_bytes())
    assert (asc.object_type, asc.object_type_name, asc.output_sample_rate, asc.frame_length) == (
        22,
        "HE-AAC",
        48000,
        1024,
    )


def test_error_resilient_types() -> None:
    # ER AAC-LD (23), extensionFlag 1 with the three resilience flags, then epConfig 0.
    w = BitWriter()
    w.write_bits(23, 5)
    w.write_bits(3, 4)
    w.write_bits(1, 4)
    w.write_bits(0b101, 3)  # frameLengthFlag (480/512 for LD), no core coder, extensionFlag
    w.write_bits(0, 3 + 1 + 2)
    asc = parse_audio_specific_config(w.to_bytes())
    assert (asc.object_type_name, asc.channels, asc.frame_length) == ("ER AAC-LD", 1, 480)
    # epConfig 2 stops the walk but keeps the facts.
    w = BitWriter()
    w.write_bits(17, 5)
    w.write_bits(4, 4)
    w.write_bits(2, 4)
    w.write_bits(0b001, 3)
    w.write_bits(0, 4)
    w.write_bits(2, 2)
    w.write_bits(0, 8)
    asc = parse_audio_specific_config(w.to_bytes())
    assert (asc.object_type_name, asc.sample_rate, asc.channels, asc.frame_length) == (
        "ER AAC-LC",
        44100,
        2,
        None,
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "need 5 bits"),
        (b"\x12", "need 4 bits"),
        (b"\x00\x10", "object type 0"),
        (bytes([0x16, 0x90]), "samplingFrequencyIndex=13"),
        (bytes([0x17, 0x10]), "samplingFrequencyIndex=14"),
        (bytes([0x2B, 0x11]), "need 4 bits"),  # explicit SBR cut before the extension frequency
        (bytes.fromhex("2b170800"), "samplingFrequencyIndex=14"),  # a reserved extension frequency
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(CodecParseError, match=message):
        parse_audio_specific_config(data)
    with pytest.raises(CodecParseError):
        codec_config_from_asc(data)


@pytest.mark.parametrize(
    ("object_type", "name"),
    [
        (1, "AAC-Main"),
        (2, "AAC-LC"),
        (4, "AAC-LTP"),
        (5, "HE-AAC"),
        (29, "HE-AACv2"),
        (42, "USAC"),
        (50, "AOT 50"),
    ],
)
def test_object_type_names(object_type: int, name: str) -> None:
    assert aac_object_type_name(object_type) == name


# -- building --------------------------------------------------------------------------------------------


def test_build() -> None:
    assert build_audio_specific_config(2, 44100, 2) == LC_44100_STEREO[:2]
    assert build_audio_specific_config(2, 48000, 1) == LC_48000_MONO[:2]
    assert build_audio_specific_config(2, 48000, 6) == LC_48000_5_1[:2]
    assert build_audio_specific_config(5, 48000, 2) == bytes.fromhex("2b118800")
    assert build_audio_specific_config(29, 48000, 2) == bytes.fromhex("eb098800")
    assert parse_audio_specific_config(build_audio_specific_config(2, 48000, 8)).channels == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 44100, 2), "object_type=0"),
        ((23, 44100, 2), "object_type=23"),
        ((2, 0, 2), "sample_rate=0"),
        ((2, 1 << 24, 2), "sample_rate=16777216"),
        ((2, 44100, 7), "channels=7"),
        ((2, 44100, 0), "channels=0"),
        ((29, 48000, 1), "not 1 channels"),
        ((5, 44101, 2), "want it even"),
    ],
)
def test_build_rejects(args: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_audio_specific_config(*args)


@given(
    st.sampled_from([1, 2, 3, 4, 5, 29]),
    st.one_of(st.sampled_from(AAC_SAMPLE_RATES), st.integers(1, (1 << 24) - 1)),
    st.sampled_from([1, 2, 3, 4, 5, 6, 8]),
)
@settings(max_examples=examples(300))
def test_build_round_trip(object_type: int, rate: int, channels: int) -> None:
    if object_type in (5, 29):
        rate = max(2, rate - rate % 2)
        channels = 2 if object_type == 29 else channels
    asc = parse_audio_specific_config(build_audio_specific_config(object_type, rate, channels))
    assert asc.output_sample_rate == rate
    assert asc.output_channels == channels
    assert asc.object_type_name == aac_object_type_name(object_type)


# -- fuzz ------------------------------------------------------------------------------------------------


@given(st.binary(max_size=40))
@settings(max_examples=examples(300))
def test_fuzz(data: bytes) -> None:
    with contextlib.suppress(CodecParseError):
        config = codec_config_from_asc(data)
        assert config.sample_rate is not None and config.sample_rate > 0
        assert config.channels is None or config.channels > 0


@given(st.sampled_from(sorted(REAL)), st.data())
@settings(max_examples=examples(300))
def test_fuzz_mutated_real_configs(name: str, data: st.DataObject) -> None:
    config = bytearray(REAL[name][0])
    for _ in range(data.draw(st.integers(1, 3))):
        config[data.draw(st.integers(0, len(config) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(CodecParseError):
        codec_config_from_asc(bytes(config[: data.draw(st.integers(0, len(config)))]))
