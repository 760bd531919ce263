"""V4L2 discovery without a camera: parsing real ``v4l2-ctl`` captures (tests/fixtures/v4l2, sources in its
README.md), classifying every node they show, negotiating modes, the ioctl layer against a fake device and
hand-packed structs, and re-plug identity over sysfs fixture trees (tests/fixtures/sysfs)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import shutil
import struct
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.hw import v4l2, v4l2_ioctl
from appliance.hw.v4l2 import (
    Choice,
    DeviceIdentity,
    FrameSize,
    NegotiationError,
    PixelFormat,
    V4l2Error,
    VideoNode,
    Wish,
)
from tests.fuzz import examples

FIXTURES = Path(__file__).parents[1] / "fixtures"
V4L2 = FIXTURES / "v4l2"
SYSFS = FIXTURES / "sysfs"
C920_RATES = (30.0, 24.0, 20.0, 15.0, 10.0, 7.5, 5.0)


def text(name: str) -> str:
    return (V4L2 / name).read_text()


def formats(name: str) -> tuple[PixelFormat, ...]:
    return v4l2.parse_list_formats_ext(text(name))


def node(name: str, path: str = "/dev/video0") -> VideoNode:
    return v4l2.node_from_v4l2_ctl(path, text(name))


def fmt(formats_: tuple[PixelFormat, ...], fourcc: str) -> PixelFormat:
    return next(f for f in formats_ if f.fourcc == fourcc)


def rates(f: PixelFormat, width: int, height: int) -> tuple[float, ...]:
    return next(s.fps for s in f.sizes if (s.width, s.height) == (width, height))


def wish(width: int, height: int, fps: float) -> Wish:
    return Wish(width=width, height=height, fps=fps)


def pi4_nodes() -> list[VideoNode]:
    """Every node of the Pi 4 dump (camera-streamer's tools/dump_cameras.sh, one block per node)."""
    parts = re.split(r"^=+\nDEVICE: (\S+)\n=+\n", text("pi4-nodes.txt"), flags=re.M)
    return [v4l2.node_from_v4l2_ctl(path, body) for path, body in zip(parts[1::2], parts[2::2], strict=True)]


def jetson_node() -> VideoNode:
    info = v4l2.parse_device_info(text("jetson-imx219-info.txt"))
    return VideoNode(
        path="/dev/video0",
        card=info.card,
        driver=info.driver,
        bus_info=info.bus_info,
        device_caps=info.device_caps,
        formats=formats("jetson-imx219-formats.txt"),
    )


# --- parsing -------------------------------------------------------------------------------------------


def test_c920_formats_sizes_and_rates() -> None:
    c920 = formats("c920-h264.txt")
    assert [(f.fourcc, f.description, f.compressed) for f in c920] == [
        ("YUYV", "YUYV 4:2:2", False),
        ("H264", "H.264", True),
        ("MJPG", "Motion-JPEG", True),
    ]
    yuyv, h264, mjpg = c920
    assert len(yuyv.sizes) == 19 and len(h264.sizes) == len(mjpg.sizes) == 17
    assert (yuyv.sizes[0].width, yuyv.sizes[0].height) == (640, 480)  # device order kept
    assert rates(yuyv, 1920, 1080) == (5.0,)
    assert rates(yuyv, 1280, 720) == (10.0, 7.5, 5.0)
    assert rates(yuyv, 2304, 1536) == (2.0,)
    assert rates(h264, 1920, 1080) == rates(mjpg, 1920, 1080) == C920_RATES


def test_old_layout_gives_the_same_formats_as_the_new() -> None:
    def shape(fs: tuple[PixelFormat, ...]) -> list[tuple[str, bool, tuple[FrameSize, ...]]]:
        return [(f.fourcc, f.compressed, f.sizes) for f in fs]

    old = formats("c920-h264-old-style.txt")
    assert shape(old) == shape(formats("c920-h264.txt"))
    assert [f.description for f in old] == ["YUV 4:2:2 (YUYV)", "H.264", "MJPEG"]  # from the Name lines


def test_c920_device_info_ignores_the_media_block() -> None:
    info = v4l2.parse_device_info(text("c920-h264.txt"))
    assert info == v4l2.DeviceInfo(
        driver="uvcvideo",
        card="HD Pro Webcam C920",
        bus_info="usb-0000:0a:00.3-3",
        capabilities=0x84A00001,
        device_caps=0x04200001,
    )


def test_jetson_device_info_takes_the_video_driver_not_the_media_driver() -> None:
    info = v4l2.parse_device_info(text("jetson-imx219-info.txt"))
    assert (info.driver, info.card, info.bus_info) == (
        "tegra-video",
        "vi-output, imx219 10-0010",
        "platform:tegra-capture-vi:2",
    )


def test_device_info_old_header_uppercase_hex_and_no_device_caps() -> None:
    old = "Driver Info (not using libv4l2):\n\tDriver name   : uvcvideo\n\tCapabilities  : 0x84A00001\n"
    info = v4l2.parse_device_info(old)
    assert (info.driver, info.card, info.capabilities, info.device_caps) == (
        "uvcvideo",
        "",
        0x84A00001,
        0x84A00001,
    )
    with pytest.raises(ValueError, match="not v4l2-ctl --info"):
        v4l2.parse_device_info(text("c920-h264-old-style.txt"))
    with pytest.raises(ValueError, match="want hex"):
        v4l2.parse_device_info("Driver name : x\nCapabilities : zz\n")


def test_ms2109_card_with_colons_and_limited_yuyv() -> None:
    ms = node("ms2109.txt")
    assert ms.card == "UVC Camera (534d:2109): USB Vid"
    mjpg, yuyv = ms.formats
    assert (mjpg.fourcc, yuyv.fourcc) == ("MJPG", "YUYV")
    assert rates(mjpg, 1280, 720) == (60.0, 50.0, 30.0, 20.0, 10.0)
    assert rates(yuyv, 1920, 1080) == (5.0,)
    assert rates(yuyv, 640, 480) == (30.0, 20.0, 10.0, 5.0)


def test_repeated_sizes_merge() -> None:
    # The Jetson IMX219 list repeats 1280x720; the Pi dump's USB webcam repeats whole H264 size blocks.
    (rg10,) = formats("jetson-imx219-formats.txt")
    assert [(s.width, s.height, s.fps) for s in rg10.sizes] == [
        (3264, 2464, (21.0,)),
        (3264, 1848, (28.0,)),
        (1920, 1080, (30.0,)),
        (1280, 720, (60.0,)),
    ]
    webcam = next(n for n in pi4_nodes() if n.path == "/dev/video2")
    h264 = fmt(webcam.formats, "H264")
    assert len(h264.sizes) == 10 and rates(h264, 640, 480) == (30.0, 25.0)


def test_m2m_nodes_list_only_their_capture_side() -> None:
    nodes = {n.path: n for n in pi4_nodes()}
    decode, encode = nodes["/dev/video10"], nodes["/dev/video11"]
    assert [f.fourcc for f in decode.formats] == ["YU12", "YV12", "NV12", "NV21", "NC12", "RGBP"]  # not H264
    assert [f.fourcc for f in encode.formats] == ["H264", "MJPG"]
    assert nodes["/dev/video13"].formats == ()  # output-only ISP input: its list is all "Video Output"
    assert [f.description for f in nodes["/dev/video10"].formats][4] == "Y/CbCr 4:2:0 (128b cols)"
    assert nodes["/dev/video31"].formats[0].description == "JFIF JPEG"


def test_stepwise_sizes_become_representative_sizes() -> None:
    h264 = fmt(next(n for n in pi4_nodes() if n.path == "/dev/video11").formats, "H264")
    assert [(s.width, s.height) for s in h264.sizes] == [
        (320, 240), (640, 480), (800, 600), (1024, 768), (1280, 720), (1280, 960), (1920, 1080), (1920, 1920),
    ]  # fmt: skip
    assert all(s.fps == () for s in h264.sizes)  # the codec reports no intervals


def test_representative_sizes_and_rates() -> None:
    assert [(s.width, s.height) for s in v4l2.representative_sizes(16, 16, 1000, 1000, 3, 3)] == [
        (1000, 1000)
    ]
    assert [(s.width, s.height) for s in v4l2.representative_sizes(640, 480, 640, 480)] == [(640, 480)]
    assert v4l2.representative_rates(1.0, 30.0) == (30.0, 25.0, 24.0, 20.0, 15.0, 10.0, 5.0)
    assert v4l2.representative_rates(7.5, 29.97) == (29.97, 25.0, 24.0, 20.0, 15.0, 10.0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # The layouts of v4l-utils' print_frmival(): stepwise/continuous with the fps range after.
        (
            "Interval: Stepwise 0.033s - 1.000s with step 0.033s (1.000-30.000 fps)",
            (30, 25, 24, 20, 15, 10, 5),
        ),
        ("Interval: Continuous 0.017s - 0.100s (10.000-60.000 fps)", (60, 50, 30, 25, 24, 20, 15, 10)),
        ("Interval: Discrete 0.040 s (25.000 fps)", (25,)),  # v4l-utils 0.8: a space before "s"
        ("Interval: Discrete 0.040s", (25,)),
        ("Interval: Discrete 0.000s (inf fps)", ()),  # a driver reporting a zero interval: skipped
    ],
)
def test_interval_layouts(line: str, expected: tuple[float, ...]) -> None:
    (f,) = v4l2.parse_list_formats_ext(f"[0]: 'YUYV' (YUYV 4:2:2)\n\tSize: Discrete 640x480\n\t\t{line}\n")
    assert f.sizes[0].fps == expected


def test_continuous_size_and_flags() -> None:
    listing = (
        "ioctl: VIDIOC_ENUM_FMT\n\tType: Video Capture Multiplanar\n\n"
        "\t[0]: 'H264' (H.264, compressed, continuous-bytestream)\n\t\tSize: Continuous 64x64 - 640x480\n"
        "\t[1]: 'NV12' (Y/CbCr 4:2:0, emulated)\n\t\tSize: Continuous\n"
    )
    h264, nv12 = v4l2.parse_list_formats_ext(listing)
    assert (h264.description, h264.compressed) == ("H.264", True)
    assert [(s.width, s.height) for s in h264.sizes] == [(320, 240), (640, 480)]
    assert (nv12.description, nv12.compressed, nv12.sizes) == ("Y/CbCr 4:2:0", False, ())


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        ("\tSize: Discrete 640x480\n", "before any pixel format"),
        ("[0]: 'YUYV' (YUYV)\n\tInterval: Discrete 0.033s (30.000 fps)\n", "before any frame size"),
        ("[0]: 'YUYV' (YUYV)\n\tSize: Discrete 640by480\n", "unreadable frame size"),
        ("[0]: 'YUYV' (YUYV)\n\tSize: Discrete 0x480\n", "out of range"),
        ("[0]: 'YUYV' (YUYV)\n\tSize: Stepwise 640x480 - 320x240 with step 2/2\n", "empty size range"),
        (
            "[0]: 'YUYV' (YUYV)\n\tSize: Discrete 640x480\n\tInterval: Discrete soon\n",
            "unreadable frame interval",
        ),
    ],
)
def test_malformed_listings_raise_value_error(listing: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        v4l2.parse_list_formats_ext(listing)


def test_garbage_parses_to_nothing() -> None:
    assert v4l2.parse_list_formats_ext("") == ()
    assert v4l2.parse_list_formats_ext("v4l2-ctl: command not found\n") == ()


_REAL_LINES = sorted(
    {line for name in ("c920-h264.txt", "ms2109.txt", "pi4-nodes.txt") for line in text(name).splitlines()}
)


@settings(max_examples=examples(300))
@given(st.text())
def test_fuzz_any_text_gives_formats_or_value_error(data: str) -> None:
    try:
        result = v4l2.parse_list_formats_ext(data)
    except ValueError:
        return
    assert all(isinstance(f, PixelFormat) for f in result)


@settings(max_examples=examples(300))
@given(st.lists(st.sampled_from(_REAL_LINES) | st.text(max_size=40), max_size=40))
def test_fuzz_shuffled_real_lines_give_formats_or_value_error(lines: list[str]) -> None:
    for parse in (v4l2.parse_list_formats_ext, v4l2.parse_device_info):
        with contextlib.suppress(ValueError):
            parse("\n".join(lines))


# --- classification ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["c920-h264.txt", "c920-no-h264.txt", "ms2109.txt"])
def test_usb_cameras_are_usable(name: str) -> None:
    assert v4l2.unusable_reason(node(name)) is None


def test_unicam_in_media_controller_mode_is_skipped_even_though_it_lists_yuyv() -> None:
    unicam = node("pi4-unicam-imx708.txt")
    assert fmt(unicam.formats, "YUYV")  # unicam lists every format it can store...
    reason = v4l2.unusable_reason(unicam)  # ...but the imx708 sends raw Bayer
    assert reason is not None and "CSI-2 receiver (unicam)" in reason and "rpicam" in reason


def test_jetson_bayer_only_sensor_points_at_argus() -> None:
    assert v4l2.unusable_reason(jetson_node()) == (
        "raw Bayer sensor (RG10): needs an ISP; use Argus (nvarguscamerasrc)"
    )


@pytest.mark.parametrize(
    ("driver", "caps", "expected"),
    [
        ("unicam", 0x05200001, "raw Bayer sensor (pRAA, RG10): needs an ISP; use capture.source=rpicam"),
        ("sun6i-csi", 0x04200001, "raw Bayer sensor (pRAA, RG10): needs an ISP; use libcamera/Argus"),
    ],
)
def test_legacy_csi_nodes_that_offer_only_bayer(driver: str, caps: int, expected: str) -> None:
    bayer = (PixelFormat(fourcc="pRAA"), PixelFormat(fourcc="RG10", description="10-bit Bayer RGRG/GBGB"))
    legacy = VideoNode(
        path="/dev/video0", card=driver, driver=driver, bus_info="", device_caps=caps, formats=bayer
    )
    assert v4l2.unusable_reason(legacy) == expected


def test_legacy_unicam_with_a_yuv_bridge_is_usable() -> None:
    # A TC358743 HDMI bridge sends UYVY: without I/O MC, unicam then lists only that, and it works directly.
    uyvy = PixelFormat(fourcc="UYVY", sizes=(FrameSize(width=1920, height=1080, fps=(30.0,)),))
    bridge = VideoNode(
        path="/dev/video0", card="unicam", driver="unicam", bus_info="platform:fe801000.csi",
        device_caps=0x05200001, formats=(uyvy,),
    )  # fmt: skip
    assert v4l2.unusable_reason(bridge) is None


PI4_REASONS = {
    "/dev/video0": "CSI-2 receiver (unicam) in media-controller mode",
    "/dev/video1": "metadata-only node of unicam",
    "/dev/video2": None,
    "/dev/video3": "metadata-only node of uvcvideo (Webcam: Webcam)",
    "/dev/video10": "memory-to-memory device bcm2835-codec (bcm2835-codec-decode)",
    "/dev/video11": "memory-to-memory device bcm2835-codec (bcm2835-codec-encode)",
    "/dev/video12": "memory-to-memory device bcm2835-codec (bcm2835-codec-isp)",
    "/dev/video13": "Raspberry Pi ISP node (bcm2835-isp)",
    "/dev/video14": "Raspberry Pi ISP node (bcm2835-isp)",
    "/dev/video15": "Raspberry Pi ISP node (bcm2835-isp)",
    "/dev/video16": "Raspberry Pi ISP node (bcm2835-isp)",
    "/dev/video18": "memory-to-memory device bcm2835-codec (bcm2835-codec-image_fx)",
    "/dev/video19": "memory-to-memory device rpivid",
    "/dev/video20": "Raspberry Pi ISP node (bcm2835-isp)",
    "/dev/video21": "Raspberry Pi ISP node (bcm2835-isp)",
    "/dev/video22": "Raspberry Pi ISP node (bcm2835-isp)",
    "/dev/video23": "Raspberry Pi ISP node (bcm2835-isp)",
    "/dev/video31": "memory-to-memory device bcm2835-codec (bcm2835-codec-encode_image)",
}


def test_every_pi4_node_is_classified() -> None:
    nodes = pi4_nodes()
    assert {n.path for n in nodes} == set(PI4_REASONS)
    for n in nodes:
        reason, expected = v4l2.unusable_reason(n), PI4_REASONS[n.path]
        assert (reason is None) == (expected is None), n.path
        assert expected is None or (reason is not None and reason.startswith(expected)), (n.path, reason)


@pytest.mark.parametrize(
    ("caps", "formats_", "expected"),
    [
        (0x04200002, (), "no video capture capability on vivid"),
        (0x04200001, (), "vivid offers no capture formats"),
        (
            0x04200001,
            (PixelFormat(fourcc="NC12"), PixelFormat(fourcc="RGB3")),
            "no format the appliance can use",
        ),
    ],
)
def test_other_unusable_nodes(caps: int, formats_: tuple[PixelFormat, ...], expected: str) -> None:
    n = VideoNode(
        path="/dev/video0", card="vivid", driver="vivid", bus_info="", device_caps=caps, formats=formats_
    )
    reason = v4l2.unusable_reason(n)
    assert reason is not None and reason.startswith(expected)


# --- negotiation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "w", "h", "fps", "expected"),
    [
        ("c920-h264.txt", 1280, 720, 30, "H264 1280x720@30 passthrough: camera encodes H.264 itself"),
        ("c920-h264.txt", 1920, 1080, 30, "H264 1920x1080@30 passthrough: camera encodes H.264 itself"),
        # Only YUYV reaches 2304x1536: the full-rate-at-smaller-size compressed modes rank below it.
        (
            "c920-h264.txt", 2304, 1536, 2,
            "YUYV 2304x1536@2: H264 offers at most 1920x1080; MJPG offers at most 1920x1080",
        ),
        (
            "c920-no-h264.txt", 1920, 1080, 30,
            "MJPG 1920x1080@30: no H.264 offered; YUYV offers 1920x1080 only at 5 fps",
        ),
        ("c920-no-h264.txt", 640, 480, 30, "MJPG 640x480@30: no H.264 offered"),
        (
            "ms2109.txt", 1920, 1080, 30,
            "MJPG 1920x1080@30: no H.264 offered; YUYV offers 1920x1080 only at 5 fps",
        ),
        (
            "ms2109.txt", 1280, 720, 60,
            "MJPG 1280x720@60: no H.264 offered; YUYV offers 1280x720 only at 10 fps",
        ),
        (
            "ms2109.txt", 1024, 600, 30,
            "MJPG 1024x768@30: no H.264 offered; YUYV offers 1024x768 only at 10 fps; "
            "smallest size covering the wished 1024x600",
        ),
        (
            "usb-endoscope-yuyv-only.txt", 1280, 720, 30,
            "YUYV 640x480@30: no H.264 offered; no MJPEG offered; largest size offered (wished 1280x720)",
        ),
        (
            "usb-endoscope-yuyv-only.txt", 320, 240, 15,
            "YUYV 320x240@30: no H.264 offered; no MJPEG offered; lowest rate at that size (wished 15 fps)",
        ),
    ],
)  # fmt: skip
def test_negotiation_decisions(name: str, w: int, h: int, fps: float, expected: str) -> None:
    choice = v4l2.negotiate(formats(name), wish(w, h, fps))
    assert choice.reason == expected
    assert choice.passthrough == (choice.fourcc == "H264")
    assert choice.ffmpeg_input_format == v4l2.FFMPEG_INPUT_FORMATS[choice.fourcc]


def test_negotiation_choice_fields() -> None:
    assert v4l2.negotiate(formats("c920-no-h264.txt"), wish(1920, 1080, 30)) == Choice(
        fourcc="MJPG",
        width=1920,
        height=1080,
        fps=30.0,
        passthrough=False,
        ffmpeg_input_format="mjpeg",
        reason="MJPG 1920x1080@30: no H.264 offered; YUYV offers 1920x1080 only at 5 fps",
    )


def test_ntsc_rate_serves_a_30_fps_wish_and_ffmpeg_names() -> None:
    sizes = (FrameSize(width=1920, height=1080, fps=(29.97,)),)
    nv12 = v4l2.negotiate((PixelFormat(fourcc="NV12", sizes=sizes),), wish(1920, 1080, 30))
    assert (nv12.fps, nv12.ffmpeg_input_format, nv12.reason) == (
        29.97,
        "nv12",
        "NV12 1920x1080@29.97: no H.264 offered; no MJPEG offered",
    )
    names = {f: v4l2.negotiate((PixelFormat(fourcc=f, sizes=sizes),), wish(640, 480, 30)).ffmpeg_input_format
             for f in ("H264", "MJPG", "JPEG", "YUYV", "NV12", "YU12", "UYVY")}  # fmt: skip
    assert names == {
        "H264": "h264", "MJPG": "mjpeg", "JPEG": "mjpeg", "YUYV": "yuyv422", "NV12": "nv12",
        "YU12": "yuv420p", "UYVY": "uyvy422",
    }  # fmt: skip


def test_stepwise_without_rates_runs_at_the_wished_rate() -> None:
    choice = v4l2.negotiate(formats("pi4-unicam-imx708.txt"), wish(1920, 1080, 30))
    assert (choice.fourcc, choice.width, choice.height, choice.fps) == ("YUYV", 1920, 1080, 30.0)


def test_nothing_usable_raises_a_clear_negotiation_error() -> None:
    with pytest.raises(
        NegotiationError, match=r"no usable pixel format \(offered: RG10\); the appliance takes H264"
    ):
        v4l2.negotiate(formats("jetson-imx219-formats.txt"), wish(1920, 1080, 30))
    with pytest.raises(NegotiationError, match=r"offered: nothing"):
        v4l2.negotiate((), wish(1920, 1080, 30))
    with pytest.raises(NegotiationError, match="YUYV offered without any frame size"):
        v4l2.negotiate((PixelFormat(fourcc="YUYV"),), wish(1920, 1080, 30))
    assert issubclass(NegotiationError, ValueError)


def test_wish_and_frame_size_validate() -> None:
    with pytest.raises(ValueError, match="want positive"):
        Wish(width=0, height=720, fps=30)
    with pytest.raises(ValueError, match="highest first"):
        FrameSize(width=640, height=480, fps=(15.0, 30.0))


_sizes = st.builds(
    lambda w, h, r: FrameSize(width=w, height=h, fps=tuple(sorted(set(r), reverse=True))),
    st.integers(1, 4096),
    st.integers(1, 4096),
    st.lists(st.sampled_from([5.0, 7.5, 15.0, 24.0, 25.0, 29.97, 30.0, 60.0]), max_size=4),
)
_formats = st.builds(
    lambda fourcc, sizes: PixelFormat(fourcc=fourcc, sizes=tuple(sizes)),
    st.sampled_from(["H264", "MJPG", "YUYV", "NV12", "RG10", "NC12"]),
    st.lists(_sizes, max_size=4),
)


@settings(max_examples=examples(200))
@given(
    st.lists(_formats, max_size=4), st.integers(1, 4096), st.integers(1, 4096), st.sampled_from([15, 30, 60])
)
def test_fuzz_negotiation_picks_an_offered_mode_or_says_why_not(
    fs: list[PixelFormat], w: int, h: int, fps: int
) -> None:
    try:
        choice = v4l2.negotiate(fs, wish(w, h, fps))
    except NegotiationError:
        return
    chosen = [f for f in fs if f.fourcc == choice.fourcc]
    sizes = [s for f in chosen for s in f.sizes if (s.width, s.height) == (choice.width, choice.height)]
    assert sizes and any(choice.fps in s.fps or not s.fps for s in sizes)


# --- auto pick -----------------------------------------------------------------------------------------


def test_pick_auto_on_a_pi4_takes_the_usb_camera_and_explains_the_rest() -> None:
    nodes = pi4_nodes()
    picked = v4l2.pick_auto(nodes, wish(1280, 720, 30))
    assert picked is not None
    camera, choice = picked
    assert (camera.path, camera.card) == ("/dev/video2", "Webcam: Webcam")
    assert choice.reason == "H264 1280x720@30 passthrough: camera encodes H.264 itself"
    skipped = v4l2.survey(nodes, wish(1280, 720, 30)).skipped
    assert len(skipped) == len(nodes) - 1
    assert {s.path: s.reason.startswith(PI4_REASONS[s.path] or "") for s in skipped} == {
        s.path: True for s in skipped
    }


def test_survey_ranks_the_better_camera_first_whatever_the_order() -> None:
    endoscope = VideoNode(  # its capture shows the format list only
        path="/dev/video0", card="USB endoscope", driver="uvcvideo", bus_info="usb-0000:00:14.0-3",
        device_caps=0x04200001, formats=formats("usb-endoscope-yuyv-only.txt"),
    )  # fmt: skip
    c920 = node("c920-h264.txt", "/dev/video2")
    usable = v4l2.survey([endoscope, c920], wish(1280, 720, 30)).usable
    assert [(n.path, c.fourcc) for n, c in usable] == [("/dev/video2", "H264"), ("/dev/video0", "YUYV")]
    assert v4l2.pick_auto([], wish(1280, 720, 30)) is None


def test_survey_skips_a_usable_looking_node_without_frame_sizes() -> None:
    bare = VideoNode(
        path="/dev/video0", card="x", driver="uvcvideo", bus_info="", device_caps=0x04200001,
        formats=(PixelFormat(fourcc="MJPG"),),
    )  # fmt: skip
    (skipped,) = v4l2.survey([bare], wish(640, 480, 30)).skipped
    assert skipped.reason == "MJPG offered without any frame size"


# --- ioctl ---------------------------------------------------------------------------------------------


def test_ioctl_numbers_match_videodev2_h() -> None:
    # The values Linux headers expand to on x86_64/arm64 (and strace prints).
    assert v4l2_ioctl.VIDIOC_QUERYCAP == 0x80685600
    assert v4l2_ioctl.VIDIOC_ENUM_FMT == 0xC0405602
    assert v4l2_ioctl.VIDIOC_ENUM_FRAMESIZES == 0xC02C564A
    assert v4l2_ioctl.VIDIOC_ENUM_FRAMEINTERVALS == 0xC034564B
    sizes = [
        s.size
        for s in (v4l2_ioctl.CAPABILITY, v4l2_ioctl.FMTDESC, v4l2_ioctl.FRMSIZEENUM, v4l2_ioctl.FRMIVALENUM)
    ]
    assert sizes == [104, 64, 44, 52]
    with pytest.raises(ValueError, match="out of range"):
        v4l2_ioctl.ioc(3, "V", 0, 1 << 14)


def u32(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, "little") for v in values)


def cstr(value: str, size: int) -> bytes:
    return value.encode().ljust(size, b"\0")


# Hand-packed structs, field by field as videodev2.h lays them out (not through the module's Structs).
CAP_C920 = (
    cstr("uvcvideo", 16) + cstr("HD Pro Webcam C920", 32) + cstr("usb-0000:0a:00.3-3", 32)
    + u32(0x060507, 0x84A00001, 0x04200001) + bytes(12)
)  # fmt: skip
FMT_H264 = u32(0, 1, 0x0001) + cstr("H.264", 32) + u32(int.from_bytes(b"H264", "little"), 0) + bytes(12)
FRMSIZE_1080 = u32(0, int.from_bytes(b"H264", "little"), 1, 1920, 1080) + bytes(16) + bytes(8)
FRMIVAL_30 = u32(0, int.from_bytes(b"H264", "little"), 1920, 1080, 1, 333333, 10000000) + bytes(16) + bytes(8)


def scripted(answers: dict[tuple[int, int], bytes]) -> Callable[[int, bytearray], None]:
    """An ioctl answering (request, index) from ``answers``; EINVAL past the end, like a driver."""

    def ioctl(request: int, buf: bytearray) -> None:
        index = 0 if request == v4l2_ioctl.VIDIOC_QUERYCAP else int.from_bytes(buf[:4], "little")
        if (request, index) not in answers:
            raise OSError(errno.EINVAL, "Invalid argument")
        buf[:] = answers[request, index]

    return ioctl


def test_hand_packed_structs_decode() -> None:
    assert [len(b) for b in (CAP_C920, FMT_H264, FRMSIZE_1080, FRMIVAL_30)] == [104, 64, 44, 52]
    answers = {
        (v4l2_ioctl.VIDIOC_QUERYCAP, 0): CAP_C920,
        (v4l2_ioctl.VIDIOC_ENUM_FMT, 0): FMT_H264,
        (v4l2_ioctl.VIDIOC_ENUM_FRAMESIZES, 0): FRMSIZE_1080,
        (v4l2_ioctl.VIDIOC_ENUM_FRAMEINTERVALS, 0): FRMIVAL_30,
    }
    got = v4l2_ioctl.enumerate_node("/dev/video0", scripted(answers))
    size = FrameSize(width=1920, height=1080, fps=(30.0,))
    assert got == VideoNode(
        path="/dev/video0",
        card="HD Pro Webcam C920",
        driver="uvcvideo",
        bus_info="usb-0000:0a:00.3-3",
        device_caps=0x04200001,
        formats=(PixelFormat(fourcc="H264", description="H.264", compressed=True, sizes=(size,)),),
    )


def test_capabilities_without_device_caps_flag() -> None:
    old = CAP_C920[:84] + u32(0x04000001, 0) + bytes(12)  # pre-3.3 driver: no V4L2_CAP_DEVICE_CAPS
    got = v4l2_ioctl.enumerate_node("/dev/video0", scripted({(v4l2_ioctl.VIDIOC_QUERYCAP, 0): old}))
    assert (got.device_caps, got.formats) == (0x04000001, ())


class FakeDevice:
    """A V4L2 node behind an ioctl function, built from a parsed node: packs what a driver would."""

    def __init__(self, node: VideoNode, *, ranges: bool = False) -> None:
        self.node, self.ranges = node, ranges
        self.mplane = bool(node.device_caps & (v4l2.CAP_VIDEO_CAPTURE_MPLANE | v4l2.CAP_VIDEO_M2M_MPLANE))

    def __call__(self, request: int, buf: bytearray) -> None:
        index, pixfmt = struct.unpack_from("=II", buf)
        fmts = {int.from_bytes(f.fourcc.ljust(4).encode(), "little"): f for f in self.node.formats}
        if request == v4l2_ioctl.VIDIOC_QUERYCAP:
            n = self.node
            v4l2_ioctl.CAPABILITY.pack_into(
                buf,
                0,
                n.driver.encode(),
                n.card.encode(),
                n.bus_info.encode(),
                0,
                n.device_caps | 1 << 31,
                n.device_caps,
            )
        elif request == v4l2_ioctl.VIDIOC_ENUM_FMT:
            wanted = 9 if self.mplane else 1
            if pixfmt != wanted or index >= len(fmts):
                raise OSError(errno.EINVAL, "Invalid argument")
            value, f = list(fmts.items())[index]
            v4l2_ioctl.FMTDESC.pack_into(
                buf, 0, index, pixfmt, int(f.compressed), f.description.encode(), value, 0
            )
        elif request == v4l2_ioctl.VIDIOC_ENUM_FRAMESIZES:
            sizes = fmts[pixfmt].sizes
            if self.ranges and index == 0:
                v4l2_ioctl.FRMSIZEENUM.pack_into(buf, 0, 0, pixfmt, 3, 32, 1920, 2, 32, 1920, 2)
            elif self.ranges or index >= len(sizes):
                raise OSError(errno.EINVAL, "Invalid argument")
            else:
                v4l2_ioctl.FRMSIZEENUM.pack_into(
                    buf, 0, index, pixfmt, 1, sizes[index].width, sizes[index].height, 0, 0, 0, 0
                )
        elif request == v4l2_ioctl.VIDIOC_ENUM_FRAMEINTERVALS:
            _, _, w, h = struct.unpack_from("=IIII", buf)
            if self.ranges and index == 0:  # continuous 1/60 .. 1/5 s
                v4l2_ioctl.FRMIVALENUM.pack_into(buf, 0, 0, pixfmt, w, h, 2, 1, 60, 1, 5, 1, 1)
                return
            size = next((s for s in fmts[pixfmt].sizes if (s.width, s.height) == (w, h)), None)
            if self.ranges or size is None or index >= len(size.fps):
                raise OSError(errno.EINVAL, "Invalid argument")
            interval = 1 / Fraction(str(size.fps[index]))
            v4l2_ioctl.FRMIVALENUM.pack_into(
                buf, 0, index, pixfmt, w, h, 1, interval.numerator, interval.denominator, 0, 0, 0, 0
            )
        else:
            raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")


@pytest.mark.parametrize("name", ["c920-h264.txt", "ms2109.txt", "c920-no-h264.txt"])
def test_ioctl_enumeration_round_trips_the_fixture(name: str) -> None:
    expected = node(name)
    assert v4l2_ioctl.enumerate_node("/dev/video0", FakeDevice(expected)) == expected


def test_ioctl_enumeration_of_an_m2m_mplane_node_with_ranges() -> None:
    encoder = next(n for n in pi4_nodes() if n.path == "/dev/video11")
    got = v4l2_ioctl.enumerate_node("/dev/video11", FakeDevice(encoder, ranges=True))
    assert [f.fourcc for f in got.formats] == ["H264", "MJPG"]
    h264 = got.formats[0]
    assert [(s.width, s.height) for s in h264.sizes] == [
        (s.width, s.height) for s in encoder.formats[0].sizes
    ]
    assert h264.sizes[0].fps == (60.0, 50.0, 30.0, 25.0, 24.0, 20.0, 15.0, 10.0, 5.0)
    assert v4l2.unusable_reason(got) is not None


def test_ioctl_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(
        V4l2Error, match=r"^/nonexistent/video9: cannot open: No such file or directory$"
    ) as e:
        v4l2.query_node("/nonexistent/video9")
    assert e.value.path == "/nonexistent/video9"
    regular = tmp_path / "video0"
    regular.write_bytes(b"")
    with pytest.raises(V4l2Error, match=r"video0: VIDIOC_QUERYCAP: .*not a V4L2 device"):
        v4l2.query_node(str(regular))

    def flaky(request: int, buf: bytearray) -> None:
        if request == v4l2_ioctl.VIDIOC_QUERYCAP:
            buf[:] = CAP_C920
        else:
            raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(V4l2Error, match=r"^/dev/video0: ioctl 0xc0405602 index 0: Input/output error$"):
        v4l2_ioctl.enumerate_node("/dev/video0", flaky)


# --- sysfs ---------------------------------------------------------------------------------------------

C920_ID = DeviceIdentity(
    vendor_id="046d", product_id="082d", serial="B61DEDAF", bus_info="usb-0000:01:00.0-1.2"
)
MS2109_ID = DeviceIdentity(vendor_id="534d", product_id="2109", serial="", bus_info="usb-0000:01:00.0-1.4")


def test_list_video_paths_in_numeric_order(tmp_path: Path) -> None:
    assert v4l2.list_video_paths(SYSFS / "pi4") == [
        "/dev/video0", "/dev/video1", "/dev/video2", "/dev/video3", "/dev/video10",
    ]  # fmt: skip
    assert v4l2.list_video_paths(tmp_path) == []


def test_identity_from_sysfs() -> None:
    root = SYSFS / "pi4"
    assert v4l2.device_identity("/dev/video0", root) == C920_ID
    assert v4l2.device_identity("/dev/video1", root) == C920_ID  # the metadata node of the same camera
    assert v4l2.device_identity("/dev/video2", root) == MS2109_ID  # no iSerial: the port tells
    assert v4l2.device_identity("/dev/video10", root) == DeviceIdentity(
        vendor_id="", product_id="", serial="", bus_info="platform:bcm2835-codec"
    )
    assert v4l2.device_identity("/dev/video9", root) is None


def test_identity_follows_device_links_as_on_a_real_sysfs(tmp_path: Path) -> None:
    # Real sysfs also links videoN/device to the parent; the fixture trees leave those links out (they make
    # cycles, which pytest's collection would follow), so add them here, one pointing elsewhere.
    root = tmp_path / "pi4"
    shutil.copytree(SYSFS / "pi4", root, symlinks=True)
    for n in ("video0", "video10"):
        node = (root / "sys/class/video4linux" / n).resolve()
        (node / "device").symlink_to("../..")
    moved = (root / "sys/class/video4linux/video2").resolve()
    (moved / "device").symlink_to(os.path.relpath(root / "sys/devices/platform/soc/fe801000.csi", moved))
    (root / "sys/devices/platform/soc/fe801000.csi").mkdir(parents=True)
    assert v4l2.device_identity("/dev/video0", root) == C920_ID
    assert v4l2.device_identity("/dev/video10", root) == v4l2.device_identity("/dev/video10", SYSFS / "pi4")
    assert v4l2.device_identity("/dev/video2", root) == DeviceIdentity(
        vendor_id="", product_id="", serial="", bus_info="platform:fe801000.csi"
    )


def test_identity_bus_info_matches_what_the_driver_reports() -> None:
    # The Pi 4 dump's webcam says "usb-0000:01:00.0-1.1": the same spelling sysfs gives for port 1-1.x.
    webcam = next(n for n in pi4_nodes() if n.path == "/dev/video2")
    assert re.fullmatch(r"usb-0000:01:00\.0-1\.\d", webcam.bus_info)
    identity = v4l2.device_identity("/dev/video0", SYSFS / "pi4")
    assert identity is not None and identity.bus_info.rsplit(".", 1)[0] == webcam.bus_info.rsplit(".", 1)[0]


def test_find_device_after_renumbering() -> None:
    before, after = SYSFS / "pi4", SYSFS / "pi4-replugged"
    assert v4l2.find_device(C920_ID, before, "/dev/video0") == "/dev/video0"
    # Re-plugged into another port after the HDMI dongle took video0: same serial, now video2 (not the
    # metadata node video3).
    assert v4l2.find_device(C920_ID, after, "/dev/video0") == "/dev/video2"
    assert v4l2.find_device(C920_ID, after) == "/dev/video2"
    # The serial-less dongle stayed on its port: found by vendor/product + port.
    assert v4l2.find_device(MS2109_ID, after, "/dev/video2") == "/dev/video0"
    # Moved to another port, it can't be told from a twin: not found.
    moved = dataclasses.replace(MS2109_ID, bus_info="usb-0000:01:00.0-1.1")
    assert v4l2.find_device(moved, after, "/dev/video0") is None
    assert v4l2.find_device(C920_ID, after, accept=lambda path: False) is None
    assert v4l2.find_device(C920_ID, after, accept=lambda path: path == "/dev/video3") == "/dev/video3"
