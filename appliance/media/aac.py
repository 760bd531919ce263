"""MPEG-4 AudioSpecificConfig: the facts an AAC stream announces.

Theory of operation
-------------------
An AAC stream in FLV or MP4 announces itself with an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1): the
audio object type, sampling frequency and channel configuration, then an object-type specific part.

HE-AAC (SBR) and HE-AACv2 (SBR + parametric stereo) are signalled in one of two ways (1.6.5):

- explicitly, with object type 5 or 29 first, then the output ("extension") sampling frequency and the
  core object type (AAC-LC);
- backward compatibly, with the core object type first and a sync extension (0x2b7, then 0x548 for PS)
  after its GASpecificConfig. Decoders that do not know SBR ignore the extension and play the core.

A third, implicit way (no signalling, SBR found in the first frame) cannot be seen here: such a stream
reads as AAC-LC at half its output rate, which is what players show for it before decoding too.

The facts operators want are those of the decoded output: with SBR the sample rate is the extension rate,
and with PS the mono core decodes to stereo.

The module is pure: no I/O, no trio.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from appliance.media.bitreader import BitReader, BitWriter, CodecParseError
from appliance.media.packets import Codec, CodecConfig, Kind

__all__ = [
    "AAC_SAMPLE_RATES",
    "AudioSpecificConfig",
    "CodecParseError",
    "aac_object_type_name",
    "build_audio_specific_config",
    "codec_config_from_asc",
    "parse_audio_specific_config",
]

# ISO/IEC 14496-3 Table 1.18: samplingFrequencyIndex 0 to 12; 13 and 14 are reserved, 15 means an explicit
# 24-bit frequency follows.
AAC_SAMPLE_RATES: tuple[int, ...] = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)
_EXPLICIT_FREQUENCY = 15

# Output channels by channelConfiguration (14496-3 Table 1.19, with the additions of 23003-3). 0 means a
# program_config_element says.
_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}

_AOT_SBR = 5
_AOT_PS = 29
_AOT_ER_BSAC = 22
_AOT_ER_AAC_LD = 23
_SYNC_SBR = 0x2B7
_SYNC_PS = 0x548
# Object types whose specific config is a GASpecificConfig (14496-3 1.6.2.1).
_GA_TYPES = frozenset({1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23})
# Object types build_audio_specific_config can write: plain GA types without error resilience.
_BUILDABLE_GA_TYPES = frozenset({1, 2, 3, 4})

_OBJECT_TYPE_NAMES = {
    1: "AAC-Main",
    2: "AAC-LC",
    3: "AAC-SSR",
    4: "AAC-LTP",
    5: "HE-AAC",
    6: "AAC-Scalable",
    17: "ER AAC-LC",
    19: "ER AAC-LTP",
    20: "ER AAC-Scalable",
    22: "ER BSAC",
    23: "ER AAC-LD",
    29: "HE-AACv2",
    32: "MP1",
    33: "MP2",
    34: "MP3",
    39: "ER AAC-ELD",
    42: "USAC",
}


def aac_object_type_name(object_type: int) -> str:
    """Name an MPEG-4 audio object type (ISO/IEC 14496-3 Table 1.17), e.g. 2 is "AAC-LC".

    Returns:
        The name; "AOT N" for types without one here.
    """
    return _OBJECT_TYPE_NAMES.get(object_type, f"AOT {object_type}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioSpecificConfig:
    """The facts of an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).

    Attributes:
        object_type: The core audio object type (2 for AAC-LC, also under HE-AAC).
        sampling_frequency_index: 0 to 12, or 15 for an explicit frequency.
        sample_rate: The core sampling frequency in Hz.
        channel_configuration: channelConfiguration; 0 means a program config element defines channels.
        channels: The core's channel count, or None when unknown (a reserved configuration, or a program
            config element that could not be read).
        sbr: Spectral band replication is signalled (HE-AAC).
        ps: Parametric stereo is signalled (HE-AACv2).
        extension_sample_rate: The SBR output sampling frequency, or None without SBR.
        frame_length: Samples per core frame: 1024 or 960 (512 or 480 for AAC-LD) for the types whose
            GASpecificConfig was read, else None.
    """

    object_type: int
    sampling_frequency_index: int
    sample_rate: int
    channel_configuration: int
    channels: int | None
    sbr: bool = False
    ps: bool = False
    extension_sample_rate: int | None = None
    frame_length: int | None = None

    @property
    def object_type_name(self) -> str:
        """ "HE-AACv2" with PS, "HE-AAC" with SBR, else the core object type's name ("AAC-LC", ...)."""
        if self.ps:
            return "HE-AACv2"
        if self.sbr:
            return "HE-AAC"
        return aac_object_type_name(self.object_type)

    @property
    def output_sample_rate(self) -> int:
        """The decoded sample rate: the SBR rate when SBR is signalled, else the core rate."""
        return self.extension_sample_rate if self.extension_sample_rate is not None else self.sample_rate

    @property
    def output_channels(self) -> int | None:
        """The decoded channel count: parametric stereo turns a mono core into stereo."""
        if self.ps and self.channels == 1:
            return 2
        return self.channels


def parse_audio_specific_config(data: bytes) -> AudioSpecificConfig:
    """Parse an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).

    The GASpecificConfig is followed for AAC object types, to reach a program config element (channel
    configuration 0) and backward-compatible SBR/PS signalling; a malformed or unknown tail after the
    channel configuration leaves those facts unset rather than raising.

    Args:
        data: The config, as an FLV AAC sequence header or an MP4 esds DecoderSpecificInfo carries it.

    Returns:
        The parsed config.

    Raises:
        CodecParseError: Truncated before the channel configuration, object type 0, a reserved sampling
            frequency index, or an explicit frequency of 0.
    """
    r = BitReader(data)
    object_type = _read_object_type(r)
    sf_index, sample_rate = _read_frequency(r)
    channel_configuration = r.read_bits(4)
    sbr = ps = False
    extension_rate: int | None = None
    if object_type in (_AOT_SBR, _AOT_PS):
        # Explicit hierarchical signalling (1.6.5.2): the output rate, then the core object type.
        sbr, ps = True, object_type == _AOT_PS
        extension_rate = _read_frequency(r)[1]
        object_type = _read_object_type(r)
        if object_type == _AOT_ER_BSAC:
            r.skip_bits(4)  # extensionChannelConfiguration
    channels = _CHANNELS.get(channel_configuration)
    frame_length: int | None = None
    if object_type in _GA_TYPES:
        with contextlib.suppress(CodecParseError):
            frame_length, pce_channels = _read_ga_specific_config(r, object_type, channel_configuration)
            if channel_configuration == 0:
                channels = pce_channels
            if not sbr and r.bits_left >= 16:
                sbr, ps, extension_rate = _read_sync_extension(r)
    return AudioSpecificConfig(
        object_type=object_type,
        sampling_frequency_index=sf_index,
        sample_rate=sample_rate,
        channel_configuration=channel_configuration,
        channels=channels,
        sbr=sbr,
        ps=ps,
        extension_sample_rate=extension_rate,
        frame_length=frame_length,
    )


def _read_object_type(r: BitReader) -> int:
    # 1.6.2.1 GetAudioObjectType(): 31 escapes to 32 + a 6-bit value.
    object_type = r.read_bits(5)
    if object_type == 31:
        object_type = 32 + r.read_bits(6)
    if object_type == 0:
        raise CodecParseError("AudioSpecificConfig: audio object type 0 (null object)")
    return object_type


def _read_frequency(r: BitReader) -> tuple[int, int]:
    index = r.read_bits(4)
    if index == _EXPLICIT_FREQUENCY:
        rate = r.read_bits(24)
        if rate == 0:
            raise CodecParseError("AudioSpecificConfig: explicit sampling frequency 0")
        return index, rate
    if index >= len(AAC_SAMPLE_RATES):
        raise CodecParseError(f"AudioSpecificConfig: samplingFrequencyIndex={index} is reserved")
    return index, AAC_SAMPLE_RATES[index]


def _read_ga_specific_config(
    r: BitReader, object_type: int, channel_configuration: int
) -> tuple[int, int | None]:
    # 1.6.2.1 / 4.4.1 GASpecificConfig. Returns the frame length and, for channel configuration 0, the
    # channel count of the program config element.
    # frameLengthFlag picks 960 instead of 1024 samples; for AAC-LD, 480 instead of 512 (4.5.1.1).
    short_frames = r.read_flag()
    if object_type == _AOT_ER_AAC_LD:
        frame_length = 480 if short_frames else 512
    else:
        frame_length = 960 if short_frames else 1024
    if r.read_flag():  # dependsOnCoreCoder
        r.skip_bits(14)  # coreCoderDelay
    extension_flag = r.read_flag()
    pce_channels = _read_program_config_element(r) if channel_configuration == 0 else None
    if object_type in (6, 20):
        r.skip_bits(3)  # layerNr
    if extension_flag:
        if object_type == _AOT_ER_BSAC:
            r.skip_bits(16)  # numOfSubFrame, layer_length
        if object_type in (17, 19, 20, 23):
            r.skip_bits(3)  # the three resilience flags
        r.skip_bits(1)  # extensionFlag3
    if object_type in (17, 19, 20, 21, 22, 23):
        ep_config = r.read_bits(2)
        if ep_config in (2, 3):
            # An ErrorProtectionSpecificConfig follows; nothing after it is needed, and nothing after it
            # can be found without parsing it.
            raise CodecParseError("AudioSpecificConfig: epConfig 2/3 is not followed")
    return frame_length, pce_channels


def _read_program_config_element(r: BitReader) -> int:
    # 14496-3 4.4.1.1 program_config_element(): count the channels of its elements; a channel pair
    # element (is_cpe) carries two.
    r.skip_bits(4 + 2 + 4)  # element_instance_tag, object_type, sampling_frequency_index
    front, side, back = r.read_bits(4), r.read_bits(4), r.read_bits(4)
    lfe = r.read_bits(2)
    assoc_data, valid_cc = r.read_bits(3), r.read_bits(4)
    if r.read_flag():  # mono_mixdown_present
        r.skip_bits(4)
    if r.read_flag():  # stereo_mixdown_present
        r.skip_bits(4)
    if r.read_flag():  # matrix_mixdown_idx_present
        r.skip_bits(3)
    channels = 0
    for _ in range(front + side + back):
        channels += 2 if r.read_flag() else 1  # is_cpe
        r.skip_bits(4)  # element_tag_select
    r.skip_bits(4 * lfe + 4 * assoc_data + 5 * valid_cc)
    # byte_alignment() counts from the start of the AudioSpecificConfig, where the reader started.
    r.skip_bits(-r.position % 8)
    r.skip_bits(8 * r.read_bits(8))  # comment_field_bytes, comment_field_data
    if channels + lfe == 0:
        raise CodecParseError("AudioSpecificConfig: program config element without channels")
    return channels + lfe


def _read_sync_extension(r: BitReader) -> tuple[bool, bool, int | None]:
    # 1.6.2.1, after the specific config: backward-compatible SBR/PS signalling (1.6.5.3).
    if r.read_bits(11) != _SYNC_SBR:
        return False, False, None
    if _read_object_type(r) != _AOT_SBR or not r.read_flag():  # extensionAudioObjectType, sbrPresentFlag
        return False, False, None
    extension_rate = _read_frequency(r)[1]
    ps = False
    if r.bits_left >= 12 and r.read_bits(11) == _SYNC_PS:
        ps = r.read_flag()
    return True, ps, extension_rate


def build_audio_specific_config(object_type: int, sample_rate: int, channels: int) -> bytes:
    """Build an AudioSpecificConfig.

    HE-AAC (5) and HE-AACv2 (29) are written with explicit hierarchical signalling (1.6.5.2): the SBR
    output rate `sample_rate`, a core of AAC-LC at half that rate, and for HE-AACv2 a mono core that
    parametric stereo decodes to `channels` == 2.

    Args:
        object_type: 1 (AAC-Main), 2 (AAC-LC), 3 (AAC-SSR), 4 (AAC-LTP), 5 (HE-AAC) or 29 (HE-AACv2).
        sample_rate: The output sampling frequency in Hz; rates outside `AAC_SAMPLE_RATES` are written as
            explicit frequencies.
        channels: 1 to 6, or 8.

    Returns:
        The config: 2 bytes for AAC-LC at a standard rate.

    Raises:
        ValueError: An unsupported object type or channel count, a sample rate that is not positive or
            does not fit in 24 bits, or HE-AACv2 with other than 2 channels.
    """
    if object_type not in _BUILDABLE_GA_TYPES and object_type not in (_AOT_SBR, _AOT_PS):
        raise ValueError(f"build_audio_specific_config: object_type={object_type}: want 1, 2, 3, 4, 5 or 29")
    if not 0 < sample_rate < 1 << 24:
        raise ValueError(f"build_audio_specific_config: sample_rate={sample_rate}: want 1 to 2**24 - 1 Hz")
    configs = {count: config for config, count in _CHANNELS.items() if config <= 7}
    if channels not in configs:
        raise ValueError(f"build_audio_specific_config: channels={channels}: want 1 to 6 or 8")
    w = BitWriter()
    if object_type == _AOT_PS and channels != 2:
        raise ValueError(f"build_audio_specific_config: HE-AACv2 decodes to stereo, not {channels} channels")
    if object_type in (_AOT_SBR, _AOT_PS):
        # SBR doubles the rate of the core (dual-rate SBR, 1.6.5.2); PS rebuilds stereo from a mono core.
        if sample_rate % 2:
            raise ValueError(f"build_audio_specific_config: HE-AAC sample_rate={sample_rate}: want it even")
        w.write_bits(object_type, 5)
        _write_frequency(w, sample_rate // 2)
        w.write_bits(configs[1] if object_type == _AOT_PS else configs[channels], 4)
        _write_frequency(w, sample_rate)
        w.write_bits(2, 5)  # core audioObjectType: AAC-LC
    else:
        w.write_bits(object_type, 5)
        _write_frequency(w, sample_rate)
        w.write_bits(configs[channels], 4)
    w.write_bits(0, 3)  # GASpecificConfig: 1024-sample frames, no core coder, no extension
    return w.to_bytes()


def _write_frequency(w: BitWriter, rate: int) -> None:
    if rate in AAC_SAMPLE_RATES:
        w.write_bits(AAC_SAMPLE_RATES.index(rate), 4)
    else:
        w.write_bits(_EXPLICIT_FREQUENCY, 4)
        w.write_bits(rate, 24)


def codec_config_from_asc(data: bytes) -> CodecConfig:
    """Make the AAC `CodecConfig` for an AudioSpecificConfig, with its facts filled in.

    Args:
        data: The AudioSpecificConfig.

    Returns:
        An AUDIO/AAC config whose `data` is `data`, with the output sample rate and channel count and the
        object type's name as `profile` ("AAC-LC", "HE-AAC", "HE-AACv2", ...).

    Raises:
        CodecParseError: The config is malformed (see `parse_audio_specific_config`).
    """
    asc = parse_audio_specific_config(data)
    return CodecConfig(
        kind=Kind.AUDIO,
        codec=Codec.AAC,
        data=bytes(data),
        sample_rate=asc.output_sample_rate,
        channels=asc.output_channels,
        profile=asc.object_type_name,
    )
