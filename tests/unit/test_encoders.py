"""The H.264 encoder probe: board rules with fake opens, then real opens against the PyAV wheel's FFmpeg."""

from __future__ import annotations

import fractions
import logging
import random
import threading
from collections.abc import Iterator

import av
import av.logging
import pytest

from appliance.hw import encoders
from appliance.hw.board import probe_board
from appliance.hw.encoders import (
    CANDIDATES,
    EncoderOpenError,
    EncoderUnavailableError,
    encoder_options,
    probe_encoders,
    try_open,
)

RPI4 = {"model": "Raspberry Pi 4 Model B Rev 1.5", "family": "rpi", "arch": "aarch64"}
RPI5 = {"model": "Raspberry Pi 5 Model B Rev 1.0", "family": "rpi5", "arch": "aarch64"}
JETSON_NANO = {"model": "NVIDIA Jetson Nano Developer Kit", "family": "jetson", "arch": "aarch64"}
ORIN_NANO = {"model": "NVIDIA Jetson Orin Nano Developer Kit", "family": "jetson", "arch": "aarch64"}
PC = {"model": "LENOVO 20XW", "family": "generic", "arch": "x86_64"}


class FakeOpener:
    """Opens the names in `works`; the rest fail with a reason naming them. Records what was tried."""

    def __init__(self, *works: str) -> None:
        self.works = set(works)
        self.tried: list[str] = []

    def __call__(self, name: str) -> None:
        self.tried.append(name)
        if name not in self.works:
            raise EncoderOpenError(f"{name} failed here")


def reasons(choice: encoders.EncoderChoice) -> dict[str, str]:
    return {p.name: p.reason for p in choice.probes}


# -- board rules, with fake opens ------------------------------------------------------------------


def test_rpi4_with_working_v4l2m2m_picks_it_first() -> None:
    opener = FakeOpener("h264_v4l2m2m", "libx264")
    choice = probe_encoders(RPI4, open_encoder=opener)
    assert (choice.name, choice.hardware, choice.reason) == ("h264_v4l2m2m", True, "h264_v4l2m2m (hardware)")
    assert opener.tried == ["h264_v4l2m2m"]
    assert [(p.name, p.available) for p in choice.probes] == [("h264_v4l2m2m", True)]


def test_rpi4_whose_v4l2m2m_fails_skips_pc_and_jetson_encoders() -> None:
    opener = FakeOpener("libx264")
    choice = probe_encoders(RPI4, open_encoder=opener)
    assert choice.name == "libx264"
    assert opener.tried == ["h264_v4l2m2m", "libx264"]
    why = reasons(choice)
    assert why["h264_v4l2m2m"] == "h264_v4l2m2m failed here"
    assert why["h264_nvmpi"] == why["h264_nvv4l2"] == "not a Jetson"
    assert "not on a Raspberry Pi" in why["h264_qsv"]


def test_rpi5_has_no_hardware_encoder_and_v4l2m2m_is_not_even_opened() -> None:
    opener = FakeOpener("h264_v4l2m2m", "h264_nvmpi", "h264_vaapi", "h264_qsv", "h264_nvenc", "libx264")
    choice = probe_encoders(RPI5, open_encoder=opener)
    assert opener.tried == ["libx264"]  # nothing hardware-specific to other boards either
    assert (choice.name, choice.hardware) == ("libx264", False)
    assert choice.reason == "libx264 (software): no hardware H.264 encoder usable here"
    assert reasons(choice)["h264_v4l2m2m"] == "Raspberry Pi 5 has no H.264 hardware encoder"
    assert all(not p.available for p in choice.probes if p.hardware)


def test_jetson_nano_with_nvmpi_picks_nvmpi() -> None:
    opener = FakeOpener("h264_nvmpi", "libx264")
    choice = probe_encoders(JETSON_NANO, open_encoder=opener)
    assert (choice.name, choice.hardware, choice.reason) == ("h264_nvmpi", True, "h264_nvmpi (hardware)")
    # v4l2m2m is still tried first (it is not a Pi rule), and fails on a Jetson.
    assert opener.tried == ["h264_v4l2m2m", "h264_nvmpi"]


def test_jetson_with_the_l4t_nvv4l2_fork_picks_nvv4l2() -> None:
    opener = FakeOpener("h264_nvv4l2", "libx264")
    choice = probe_encoders(JETSON_NANO, open_encoder=opener)
    assert choice.name == "h264_nvv4l2"
    assert opener.tried == ["h264_v4l2m2m", "h264_nvmpi", "h264_nvv4l2"]


def test_jetson_never_tries_pc_encoders() -> None:
    opener = FakeOpener("h264_nvenc", "h264_vaapi", "h264_qsv", "libx264")
    choice = probe_encoders(JETSON_NANO, open_encoder=opener)
    assert choice.name == "libx264"
    assert "h264_nvenc" not in opener.tried and "h264_vaapi" not in opener.tried
    assert "not on a Jetson" in reasons(choice)["h264_nvenc"]


def test_orin_nano_says_it_has_no_nvenc_and_does_not_open_the_jetson_encoders() -> None:
    opener = FakeOpener("h264_nvmpi", "h264_nvv4l2", "libx264")
    choice = probe_encoders(ORIN_NANO, open_encoder=opener)
    assert choice.name == "libx264"
    assert opener.tried == ["h264_v4l2m2m", "libx264"]
    why = reasons(choice)
    assert why["h264_nvmpi"] == why["h264_nvv4l2"] == "Jetson Orin Nano has no hardware video encoder (NVENC)"


def test_generic_pc_falls_back_to_libx264_recording_every_failure() -> None:
    opener = FakeOpener("libx264")
    choice = probe_encoders(PC, open_encoder=opener)
    assert (choice.name, choice.hardware) == ("libx264", False)
    assert choice.reason == "libx264 (software): no hardware H.264 encoder usable here"
    assert opener.tried == ["h264_v4l2m2m", "h264_vaapi", "h264_qsv", "h264_nvenc", "libx264"]
    assert [p.name for p in choice.probes] == list(CANDIDATES)
    why = reasons(choice)
    for name in ("h264_v4l2m2m", "h264_vaapi", "h264_qsv", "h264_nvenc"):
        assert why[name] == f"{name} failed here"
    assert why["h264_nvmpi"] == "not a Jetson"
    assert choice.probes[-1].available


def test_generic_pc_with_a_desktop_nvidia_gpu_picks_nvenc() -> None:
    choice = probe_encoders(PC, open_encoder=FakeOpener("h264_nvenc", "libx264"))
    assert (choice.name, choice.reason) == ("h264_nvenc", "h264_nvenc (hardware)")


def test_prefer_libx264_skips_hardware() -> None:
    opener = FakeOpener("h264_v4l2m2m", "libx264")
    choice = probe_encoders(RPI4, prefer="libx264", open_encoder=opener)
    assert opener.tried == ["libx264"]
    assert (choice.name, choice.reason) == ("libx264", "libx264 (software): chosen by capture.encoder")
    assert [p.name for p in choice.probes] == ["libx264"]


def test_prefer_a_working_hardware_encoder() -> None:
    choice = probe_encoders(RPI4, prefer="h264_v4l2m2m", open_encoder=FakeOpener("h264_v4l2m2m"))
    assert choice.name == "h264_v4l2m2m"
    assert choice.reason == "h264_v4l2m2m (hardware): chosen by capture.encoder"


def test_prefer_v4l2m2m_that_fails_falls_back_to_libx264_saying_why() -> None:
    opener = FakeOpener("libx264")
    choice = probe_encoders(PC, prefer="h264_v4l2m2m", open_encoder=opener)
    assert opener.tried == ["h264_v4l2m2m", "libx264"]
    assert choice.name == "libx264"
    assert choice.reason == (
        "libx264 (software): capture.encoder=h264_v4l2m2m unusable here (h264_v4l2m2m failed here)"
    )


def test_prefer_obeys_board_rules_too() -> None:
    opener = FakeOpener("h264_v4l2m2m", "libx264")
    choice = probe_encoders(RPI5, prefer="h264_v4l2m2m", open_encoder=opener)
    assert opener.tried == ["libx264"]
    assert "Raspberry Pi 5 has no H.264 hardware encoder" in choice.reason


def test_unknown_prefer_raises_naming_the_key_and_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"capture\.encoder='h264_omx'.*auto, h264_v4l2m2m.*libx264"):
        probe_encoders(PC, prefer="h264_omx", open_encoder=FakeOpener())


@pytest.mark.parametrize("prefer", ["auto", "libx264", "h264_qsv"])
def test_no_libx264_at_all_raises_naming_capture_encoder(prefer: str) -> None:
    with pytest.raises(EncoderUnavailableError, match=rf"capture\.encoder={prefer}: .*libx264 failed here"):
        probe_encoders(PC, prefer=prefer, open_encoder=FakeOpener())


def test_a_board_dict_without_family_counts_as_generic() -> None:
    opener = FakeOpener("libx264")
    probe_encoders({}, open_encoder=opener)
    assert opener.tried == ["h264_v4l2m2m", "h264_vaapi", "h264_qsv", "h264_nvenc", "libx264"]


# -- encoder settings ------------------------------------------------------------------------------


def test_libx264_settings_fix_the_gop_and_allow_live_rate_changes() -> None:
    s = encoder_options("libx264", profile="main", gop=60, bitrate_bps=2_000_000, fps=30)
    assert s.options == {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "main",
        "x264-params": "scenecut=0:keyint=60:min-keyint=60",
        "forced-idr": "1",
        "maxrate": "2000000",
        "bufsize": "2000000",
    }
    assert (s.pix_fmt, s.hwaccel) == ("yuv420p", None)
    assert (s.live_bitrate, s.live_bitrate_max_bps) == (True, 2_000_000)


def test_v4l2m2m_settings_need_a_reopen_for_a_new_rate() -> None:
    s = encoder_options("h264_v4l2m2m", profile="baseline", gop=60, bitrate_bps=2_000_000, fps=30)
    assert (dict(s.options), s.pix_fmt, s.live_bitrate) == ({"profile": "66"}, "yuv420p", False)


def test_vaapi_settings_upload_to_the_device() -> None:
    s = encoder_options("h264_vaapi", profile="baseline", gop=60, bitrate_bps=1_000_000, fps=30)
    assert (s.hwaccel, s.pix_fmt, s.options["profile"]) == ("vaapi", "nv12", "constrained_baseline")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"profile": "extended"}, "profile='extended'"),
        ({"gop": 0}, "gop=0"),
        ({"bitrate_bps": 0}, "bitrate_bps=0"),
        ({"fps": 0.0}, "fps=0.0"),
    ],
)
def test_encoder_options_rejects_bad_values(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"profile": "baseline", "gop": 30, "bitrate_bps": 1, "fps": 30.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        encoder_options("libx264", **args)  # type: ignore[arg-type]


def test_encoder_options_rejects_an_unknown_encoder() -> None:
    with pytest.raises(ValueError, match="encoder='h264_omx': unknown"):
        encoder_options("h264_omx", profile="baseline", gop=30, bitrate_bps=1, fps=30)


@pytest.mark.parametrize("name", [n for n in CANDIDATES if n in av.codecs_available])
@pytest.mark.parametrize("profile", ["baseline", "main", "high"])
def test_every_option_we_set_exists_in_this_build(name: str, profile: str) -> None:
    # Option names and named values the build knows; a typo would fail the open and waste the hardware.
    s = encoder_options(name, profile=profile, gop=30, bitrate_bps=1_000_000, fps=30)
    known = av.CodecContext.create(name, "w").supported_options
    by_name = {o.name: o for o in known.generic}
    by_name.update({o.name: o for o in known.private})  # private first, as FFmpeg resolves them
    for key, value in s.options.items():
        assert key in by_name, (name, key)
        choices = {c.name for c in by_name[key].choices}
        if choices and not value.lstrip("-").isdigit():
            assert value in choices, (name, key, value, choices)
    codec = av.codec.Codec(name, "w")
    if codec.video_formats is not None:
        assert s.pix_fmt in {f.name for f in codec.video_formats}


def test_libx264_settings_change_the_rate_live() -> None:
    # A live drop takes effect without a reopen (x264 reconfigures its VBV), which live_bitrate promises.
    s = encoder_options("libx264", profile="baseline", gop=30, bitrate_bps=1_500_000, fps=30)
    ctx = av.CodecContext.create("libx264", "w")
    assert isinstance(ctx, av.video.codeccontext.VideoCodecContext)
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, s.pix_fmt
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.framerate = fractions.Fraction(30)
    ctx.bit_rate = 1_500_000
    ctx.gop_size = 30
    ctx.max_b_frames = 0
    ctx.options = dict(s.options)
    ctx.open()
    noise = [_noise(i) for i in range(4)]
    seconds: list[int] = []
    keyframes: list[int] = []
    for i in range(240):
        if i == 120:
            ctx.bit_rate = 300_000
        frame = av.VideoFrame(320, 240, "yuv420p")
        for plane, data in zip(frame.planes, noise[i % 4], strict=True):
            plane.update(data[: plane.buffer_size])
        frame.pts = i
        for packet in ctx.encode(frame):
            if i // 30 >= len(seconds):
                seconds.append(0)
            seconds[-1] += packet.size * 8
            if packet.is_keyframe:
                keyframes.append(i)
    assert keyframes == list(range(0, 240, 30))  # the fixed GOP, noise or not
    before, after = seconds[2], seconds[6]
    assert before > 1_000_000 and after < 450_000, seconds


def _noise(seed: int) -> list[bytes]:
    # Incompressible planes, the same on every run.
    rng = random.Random(seed)
    return [rng.randbytes(size) for size in (320 * 240, 160 * 120, 160 * 120)]


# -- real opens against the PyAV wheel --------------------------------------------------------------


@pytest.fixture
def no_console_logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Fails the test if FFmpeg printed anything or logged through Python logging."""
    caplog.set_level(logging.DEBUG)
    level = av.logging.get_level()
    yield
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert not [r for r in caplog.records if r.name.startswith("libav")]
    assert av.logging.get_level() == level


def test_libx264_opens(no_console_logs: None) -> None:
    try_open("libx264")


@pytest.mark.parametrize("name", ["h264_vaapi", "h264_nvmpi", "h264_nvv4l2"])
def test_encoders_missing_from_the_wheel_say_so(name: str, no_console_logs: None) -> None:
    with pytest.raises(EncoderOpenError) as info:
        try_open(name)
    assert info.value.reason == "not in this FFmpeg build (PyAV wheel); build PyAV against the board's FFmpeg"


@pytest.mark.parametrize(
    ("name", "plain"),
    [
        ("h264_v4l2m2m", "no V4L2 memory-to-memory encoder device"),
        ("h264_qsv", "no Intel Quick Sync device or driver"),
        ("h264_nvenc", "no NVIDIA driver"),
    ],
)
def test_listed_hardware_encoders_fail_plainly(name: str, plain: str, no_console_logs: None) -> None:
    # No camera, GPU or SoC here. Twice: FFmpeg's repeated-message skipping must not eat the second reason.
    for _ in range(2):
        with pytest.raises(EncoderOpenError) as info:
            try_open(name, timeout_s=30)
        assert info.value.reason.startswith(plain), info.value.reason
        assert "FFmpeg: " in info.value.reason


def test_reasons_are_captured_even_when_the_app_logs_ffmpeg_verbosely(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    av.logging.set_level(av.logging.VERBOSE)
    try:
        with pytest.raises(EncoderOpenError, match="no V4L2 memory-to-memory encoder device"):
            try_open("h264_v4l2m2m")
        assert av.logging.get_level() == av.logging.VERBOSE
    finally:
        av.logging.set_level(None)
    assert not [r for r in caplog.records if r.name.startswith("libav")]


def test_a_stuck_driver_times_out_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    entered = threading.Event()

    def stuck(name: str, settings: encoders.EncoderSettings) -> None:
        entered.set()
        release.wait()  # like FFmpeg's V4L2 encoder polling a wedged driver for its first packet

    monkeypatch.setattr(encoders, "_open_and_encode", stuck)
    try:
        with pytest.raises(EncoderOpenError, match=r"no answer within 0\.2 s"):
            try_open("libx264", timeout_s=0.2)
        assert entered.is_set()
        assert av.logging.get_level() is None
    finally:
        release.set()


def test_a_bug_in_the_probe_is_raised_not_reported_as_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str, settings: encoders.EncoderSettings) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(encoders, "_open_and_encode", broken)
    with pytest.raises(KeyError, match="bug"):
        try_open("libx264")


def test_probe_here_picks_libx264_and_says_why_the_others_are_unavailable(no_console_logs: None) -> None:
    board = probe_board()
    choice = probe_encoders(board)
    assert (choice.name, choice.hardware) == ("libx264", False)
    assert choice.reason == "libx264 (software): no hardware H.264 encoder usable here"
    assert choice.probes[-1].name == "libx264" and choice.probes[-1].available
    for probe in choice.probes[:-1]:
        assert probe.hardware and not probe.available and probe.reason, probe
    if board["family"] == "generic":
        assert [p.name for p in choice.probes] == list(CANDIDATES)


def test_a_device_type_the_encoder_cannot_use_is_a_reason_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What h264_vaapi would meet in a build without VA-API device support (the wheel has no h264_vaapi).
    def vaapi_like(name: str, **kwargs: object) -> encoders.EncoderSettings:
        return encoders.EncoderSettings(pix_fmt="nv12", hwaccel="vaapi")

    monkeypatch.setattr(encoders, "encoder_options", vaapi_like)
    with pytest.raises(EncoderOpenError, match="no vaapi device support in this build"):
        try_open("libx264")
