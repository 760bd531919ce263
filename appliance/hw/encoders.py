"""Which H.264 encoder this board can use, found by really opening each candidate, and its settings.

Candidates, in the order tried (``capture.encoder = "auto"``):

1. ``h264_v4l2m2m``: V4L2 memory-to-memory encoders (Raspberry Pi 4 and older; other SoCs have them too).
   A Raspberry Pi 5 has no H.264 encoder block, so it is skipped there without opening.
2. ``h264_nvmpi``: Jetson's encoder through the Multimedia API, from the jetson-ffmpeg patches
   (jocover/jetson-ffmpeg and its Keylost/jetson-ffmpeg fork both register this name).
3. ``h264_nvv4l2``: the same hardware through NVIDIA's V4L2 plugin, from the L4T "nvv4l2" FFmpeg forks.
   Both Jetson names are tried on Jetsons only, and not on an Orin Nano, which has no NVENC block.
4. ``h264_vaapi`` and 5. ``h264_qsv``: Intel/AMD PCs.
6. ``h264_nvenc``: desktop NVIDIA GPUs (not Jetsons), on ``generic`` boards only.
7. ``libx264``: software, always last.

A name is "available" only if FFmpeg opened it *and* it encoded a frame: many builds list encoders whose
hardware or driver is absent (the PyAV wheel lists h264_v4l2m2m, h264_qsv and h264_nvenc everywhere), and
a V4L2 encoder can open yet fail on its first frame.

The PyAV wheel's FFmpeg has no Jetson encoders and no VA-API: a board that wants them needs PyAV built
against the board's FFmpeg (``pip install av --no-binary av``), which the reasons say.
"""

from __future__ import annotations

import fractions
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import av
import av.codec.codec
import av.codec.hwaccel
import av.error
import av.logging
import av.video.codeccontext

__all__ = [
    "CANDIDATES",
    "EncoderChoice",
    "EncoderOpenError",
    "EncoderProbe",
    "EncoderSettings",
    "EncoderUnavailableError",
    "encoder_options",
    "probe_encoders",
    "try_open",
]

SOFTWARE = "libx264"
JETSON_ENCODERS = ("h264_nvmpi", "h264_nvv4l2")
PC_ENCODERS = ("h264_vaapi", "h264_qsv", "h264_nvenc")
# Every encoder capture.encoder may name, in the order "auto" tries them.
CANDIDATES = ("h264_v4l2m2m", *JETSON_ENCODERS, *PC_ENCODERS, SOFTWARE)

PROFILES = ("baseline", "main", "high")
# AVCodecContext.profile values (libavcodec/defs.h AV_PROFILE_H264_*), for encoders that take a number.
_FF_PROFILE = {"baseline": 66, "main": 77, "high": 100}

NOT_IN_BUILD = "not in this FFmpeg build (PyAV wheel); build PyAV against the board's FFmpeg"

# What a probe opens: small, so a software fallback costs nothing, yet a size every encoder takes.
_PROBE_W, _PROBE_H, _PROBE_FPS = 320, 240, 30
_PROBE_TIMEOUT_S = 10.0

# FFmpeg's words -> plain words. The first FFmpeg error that matches names the cause.
_PLAIN = (
    ("could not find a valid device", "no V4L2 memory-to-memory encoder device"),
    ("mfx session", "no Intel Quick Sync device or driver"),
    ("cannot load libcuda", "no NVIDIA driver (libcuda not found)"),
    ("cannot load libnvidia-encode", "no NVIDIA encoder library (libnvidia-encode not found)"),
    ("no capable devices found", "no NVENC-capable NVIDIA GPU"),
    ("no va display", "no VA-API device (/dev/dri/renderD*)"),
    ("failed to initialise vaapi", "no VA-API device (/dev/dri/renderD*)"),
)

# av.logging's level and repeat-skipping are process-wide: one probe at a time changes them.
_LOG_LOCK = threading.Lock()


class EncoderOpenError(Exception):
    """An encoder did not open or did not encode; `reason` says why in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EncoderUnavailableError(RuntimeError):
    """Not even libx264 opened: this PyAV/FFmpeg build cannot encode H.264."""


@dataclass(frozen=True, slots=True)
class EncoderProbe:
    """What probing one candidate found.

    `available` is True only for an encoder that opened and encoded; `reason` says why not (or, for a
    skipped candidate, which board rule skipped it).
    """

    name: str
    hardware: bool
    available: bool
    reason: str


@dataclass(frozen=True, slots=True)
class EncoderChoice:
    """The encoder to use, why, and every candidate looked at on the way."""

    name: str
    hardware: bool
    reason: str
    probes: tuple[EncoderProbe, ...]


@dataclass(frozen=True, slots=True)
class EncoderSettings:
    """How to open one encoder, on top of the context fields the caller sets itself.

    The caller sets width, height, time base, frame rate, ``bit_rate``, ``gop_size`` and ``max_b_frames=0``
    on the codec context; `options` go to ``ctx.options`` (FFmpeg private and generic options).

    Attributes:
        options: FFmpeg options, all strings.
        pix_fmt: The pixel format frames must have (the caller converts other frames).
        live_bitrate: True if setting ``ctx.bit_rate`` on the open encoder changes its rate. False: the
            encoder reads its rate once when opened, so a change needs a reopen (the next frame is an IDR).
        live_bitrate_max_bps: With `live_bitrate`, the highest rate a live change can reach; above it,
            reopen. libx264 keeps the VBV ceiling it opened with (PyAV cannot change ``rc_max_rate`` on an
            open context), and x264 keeps its ABR target, so live changes work downward and back up to the
            opening rate only. 0 when `live_bitrate` is False.
        hwaccel: The FFmpeg hardware device type to create the context with
            (``av.codec.hwaccel.HWAccel(hwaccel)``), for encoders that take only device frames (VA-API);
            PyAV then uploads the software frames. None for the rest.
    """

    options: Mapping[str, str] = field(default_factory=dict)
    pix_fmt: str = "yuv420p"
    live_bitrate: bool = False
    live_bitrate_max_bps: int = 0
    hwaccel: str | None = None


def encoder_options(name: str, *, profile: str, gop: int, bitrate_bps: int, fps: float) -> EncoderSettings:
    """The options and pixel format each encoder needs for low-latency live streaming.

    The GOP is fixed at `gop` frames everywhere (no scene-cut keyframes), so segmenters and late joiners
    can count on it; keyframes asked for in between are IDRs.

    Args:
        name: One of `CANDIDATES`.
        profile: "baseline", "main" or "high".
        gop: Frames from one keyframe to the next (>= 1).
        bitrate_bps: The target rate (> 0); libx264 also uses it as the VBV ceiling with one second of buffer.
        fps: The frame rate (> 0).

    Returns:
        The settings; see `EncoderSettings`.

    Raises:
        ValueError: An unknown encoder or profile, or a non-positive number.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: want one of {', '.join(PROFILES)}")
    if gop < 1:
        raise ValueError(f"gop={gop}: want >= 1")
    if bitrate_bps <= 0:
        raise ValueError(f"bitrate_bps={bitrate_bps}: want > 0")
    if not fps > 0:
        raise ValueError(f"fps={fps}: want > 0")
    if name == "libx264":
        # scenecut=0 + keyint=min-keyint: a keyframe every `gop` frames and only then (x264 clamps
        # min-keyint to keyint/2+1, which changes nothing with scene cuts off). forced-idr: a keyframe
        # we ask for (pict_type I) is an IDR a new viewer can start from, not a recovery-point I frame.
        # VBV through the generic maxrate/bufsize: FFmpeg's libx264 wrapper copies AVCodecContext's
        # rc_max_rate/rc_buffer_size over x264's at every frame, so VBV set in x264-params would be
        # dropped; and x264 only lets a running encoder change rate while VBV is on.
        return EncoderSettings(
            options={
                "preset": "ultrafast",
                "tune": "zerolatency",
                "profile": profile,
                "x264-params": f"scenecut=0:keyint={gop}:min-keyint={gop}",
                "forced-idr": "1",
                "maxrate": str(bitrate_bps),
                "bufsize": str(bitrate_bps),
            },
            pix_fmt="yuv420p",
            live_bitrate=True,
            live_bitrate_max_bps=bitrate_bps,
        )
    if name == "h264_v4l2m2m":
        # GOP and rate come from gop_size and bit_rate, which FFmpeg's V4L2 wrapper sends to the driver
        # once at open (it never forwards a later bit_rate change, though the Pi's driver would take one:
        # a live change needs a reopen). It has no private profile option: the generic one takes numbers.
        return EncoderSettings(options={"profile": str(_FF_PROFILE[profile])}, pix_fmt="yuv420p")
    if name == "h264_nvmpi":
        # jetson-ffmpeg's nvmpi_enc.c: profile/preset/rc are named constants; gop_size sets both the I and
        # the IDR interval.
        return EncoderSettings(
            options={"profile": profile, "preset": "ultrafast", "rc": "cbr"}, pix_fmt="yuv420p"
        )
    if name == "h264_nvv4l2":
        # The L4T nvv4l2 forks differ in their private options; the generic fields are enough.
        return EncoderSettings(pix_fmt="yuv420p")
    if name == "h264_vaapi":
        # VA-API takes only device frames; its H.264 "baseline" is constrained baseline.
        vaapi_profile = "constrained_baseline" if profile == "baseline" else profile
        return EncoderSettings(
            options={"profile": vaapi_profile, "rc_mode": "CBR"}, pix_fmt="nv12", hwaccel="vaapi"
        )
    if name == "h264_qsv":
        # async_depth=1: one frame in flight, the lowest latency.
        return EncoderSettings(
            options={"profile": profile, "preset": "veryfast", "forced_idr": "1", "async_depth": "1"},
            pix_fmt="nv12",
        )
    if name == "h264_nvenc":
        return EncoderSettings(
            options={
                "preset": "p1",
                "tune": "ll",
                "profile": profile,
                "rc": "cbr",
                "zerolatency": "1",
                "forced-idr": "1",
            },
            pix_fmt="yuv420p",
        )
    raise ValueError(f"encoder={name!r}: unknown; known: {', '.join(CANDIDATES)}")


def try_open(name: str, *, timeout_s: float = _PROBE_TIMEOUT_S) -> None:
    """Open encoder `name` for real and encode one black frame, or say why that fails.

    The open runs on a helper thread that `timeout_s` bounds: FFmpeg's V4L2 encoder waits for its first
    packet with no time limit, and a wedged driver would otherwise hang the caller. (PyAV holds the GIL
    inside ``avcodec_open2`` and while freeing a context, so a driver stuck there stalls the process; the
    known hang, waiting for output, runs without it.) A helper that times out is left behind.

    FFmpeg's messages during the probe are captured for the reason and never reach the console or the
    ``libav`` loggers; av.logging's level is restored after.

    Args:
        name: One of `CANDIDATES`.
        timeout_s: How long the open and the first frame may take.

    Raises:
        EncoderOpenError: With a plain-words reason.
        ValueError: `name` is in this build but not an encoder `encoder_options` knows.
    """
    try:
        codec = av.codec.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
        raise EncoderOpenError(NOT_IN_BUILD) from None
    settings = encoder_options(name, profile="baseline", gop=_PROBE_FPS, bitrate_bps=500_000, fps=_PROBE_FPS)
    formats = codec.video_formats
    if formats is not None and settings.hwaccel is None and settings.pix_fmt not in {f.name for f in formats}:
        raise EncoderOpenError(f"takes none of the frames we have ({settings.pix_fmt})")

    outcome: list[BaseException | None] = []

    def run() -> None:
        with av.logging.Capture(local=True) as logs:
            try:
                _open_and_encode(name, settings)
            except Exception as e:  # marshalled to the caller's thread, which sorts FFmpeg's from bugs
                outcome.append(_as_open_error(e, logs))
            else:
                outcome.append(None)

    with _LOG_LOCK:
        # PyAV's default level (None) drops FFmpeg's messages before anyone sees them, error text included;
        # ERROR lets them reach the capture (which keeps them off the console), and nothing chattier.
        old_level = av.logging.get_level()
        old_skip = av.logging.get_skip_repeated()
        if old_level is None:
            av.logging.set_level(av.logging.ERROR)
        # A second probe of the same encoder repeats the same message, which would be skipped.
        av.logging.set_skip_repeated(False)
        try:
            helper = threading.Thread(target=run, name=f"encoder-probe-{name}", daemon=True)
            helper.start()
            helper.join(timeout_s)
        finally:
            av.logging.set_skip_repeated(old_skip)
            if old_level is None:
                av.logging.set_level(None)
    if helper.is_alive():
        raise EncoderOpenError(f"no answer within {timeout_s:g} s (driver stuck?); gave up on it")
    error = outcome[0]
    if error is not None:
        raise error


def probe_encoders(
    board: Mapping[str, str],
    *,
    prefer: str = "auto",
    open_encoder: Callable[[str], None] = try_open,
) -> EncoderChoice:
    """Pick the H.264 encoder: the first hardware one that opens here, else libx264.

    Args:
        board: What `appliance.hw.board.probe_board()` returns (uses "family" and "model").
        prefer: The ``capture.encoder`` setting: "auto", or one name from `CANDIDATES`. A named encoder
            that does not open falls back to libx264, and the reason says so.
        open_encoder: Opens one encoder or raises `EncoderOpenError` (tests pass a fake).

    Returns:
        The choice, with a probe for every candidate looked at: opened, failed (with FFmpeg's reason in
        plain words) or skipped by a board rule.

    Raises:
        ValueError: `prefer` is not "auto" or a known encoder.
        EncoderUnavailableError: libx264 did not open either.
    """
    if prefer != "auto" and prefer not in CANDIDATES:
        raise ValueError(f"capture.encoder={prefer!r}: unknown encoder; known: auto, {', '.join(CANDIDATES)}")
    family = board.get("family", "generic")
    model = board.get("model", "")
    names = CANDIDATES if prefer == "auto" else tuple(dict.fromkeys((prefer, SOFTWARE)))
    probes: list[EncoderProbe] = []
    for name in names:
        hardware = name != SOFTWARE
        skip = _board_rule(name, family, model)
        if skip is not None:
            probes.append(EncoderProbe(name, hardware, False, skip))
            continue
        try:
            open_encoder(name)
        except EncoderOpenError as e:
            probes.append(EncoderProbe(name, hardware, False, e.reason))
            continue
        probes.append(EncoderProbe(name, hardware, True, "opened and encoded a test frame"))
        kind = "hardware" if hardware else "software"
        if prefer == name:
            reason = f"{name} ({kind}): chosen by capture.encoder"
        elif prefer != "auto":
            reason = f"{name} ({kind}): capture.encoder={prefer} unusable here ({probes[0].reason})"
        elif hardware:
            reason = f"{name} ({kind})"
        else:
            reason = f"{name} ({kind}): no hardware H.264 encoder usable here"
        return EncoderChoice(name, hardware, reason, tuple(probes))
    raise EncoderUnavailableError(
        f"capture.encoder={prefer}: no H.264 encoder opened, not even libx264 ({probes[-1].reason}); "
        "this PyAV/FFmpeg build cannot encode H.264"
    )


# -- internals --------------------------------------------------------------------------------------


def _board_rule(name: str, family: str, model: str) -> str | None:
    """Why `name` is not worth opening on this board, or None to try it."""
    pc_only = "PC encoder (Intel/AMD/NVIDIA graphics), not on a {}"
    if name == "h264_v4l2m2m":
        # Other SoCs (Rockchip, Amlogic, i.MX...) have V4L2 m2m encoders too: only the Pi 5 is known not to.
        return "Raspberry Pi 5 has no H.264 hardware encoder" if family == "rpi5" else None
    if name in JETSON_ENCODERS:
        if family != "jetson":
            return "not a Jetson"
        if "orin nano" in model.lower():
            return "Jetson Orin Nano has no hardware video encoder (NVENC)"
        return None
    if name in PC_ENCODERS:
        if family in ("rpi", "rpi5"):
            return pc_only.format("Raspberry Pi")
        if family == "jetson":
            return pc_only.format("Jetson (its encoder is h264_nvmpi/h264_nvv4l2)")
        return None
    return None


def _open_and_encode(name: str, settings: EncoderSettings) -> None:
    if settings.hwaccel is None:
        ctx = av.CodecContext.create(name, "w")
    else:
        try:
            # Creates the device (e.g. opens /dev/dri/renderD128) before the encoder is even configured.
            ctx = av.CodecContext.create(name, "w", hwaccel=av.codec.hwaccel.HWAccel(settings.hwaccel))
        except NotImplementedError as e:  # PyAV: the encoder has no config for that device type
            raise EncoderOpenError(f"no {settings.hwaccel} device support in this build ({e})") from e
    assert isinstance(ctx, av.video.codeccontext.VideoCodecContext)
    ctx.width = _PROBE_W
    ctx.height = _PROBE_H
    ctx.pix_fmt = settings.pix_fmt
    ctx.time_base = fractions.Fraction(1, _PROBE_FPS)
    ctx.framerate = fractions.Fraction(_PROBE_FPS)
    ctx.bit_rate = 500_000
    ctx.gop_size = _PROBE_FPS
    ctx.max_b_frames = 0
    ctx.options = dict(settings.options)
    ctx.open()
    frame = av.VideoFrame(_PROBE_W, _PROBE_H, settings.pix_fmt)
    # Black in limited-range YUV: Y=16, chroma 128 (ITU-R BT.601 / BT.709 video levels).
    for index, plane in enumerate(frame.planes):
        plane.update((b"\x10" if index == 0 else b"\x80") * plane.buffer_size)
    frame.pts = 0
    packets = ctx.encode(frame) + ctx.encode(None)
    if not any(packet.size for packet in packets):
        raise EncoderOpenError("opened but produced no H.264 from a test frame")


def _as_open_error(error: Exception, logs: list[tuple[int, str, str]]) -> BaseException:
    """FFmpeg's failure as an `EncoderOpenError` with a plain reason; anything else (a bug) unchanged."""
    if isinstance(error, EncoderOpenError):
        return error
    if not isinstance(error, av.error.FFmpegError):
        return error
    messages = [m.strip() for level, _, m in logs if level <= av.logging.ERROR and m.strip()]
    attached = getattr(error, "log", None)  # (level, name, message) of FFmpeg's last error, if any
    if isinstance(attached, tuple) and len(attached) == 3 and isinstance(attached[2], str):
        messages.append(attached[2].strip())
    for message in messages:
        for needle, plain in _PLAIN:
            if needle in message.lower():
                return EncoderOpenError(f"{plain} (FFmpeg: {message})")
    detail = messages[0] if messages else (error.strerror or str(error))
    return EncoderOpenError(f"FFmpeg could not open it: {detail}")
