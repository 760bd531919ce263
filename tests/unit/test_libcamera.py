"""The ``rpicam-hello --list-cameras`` parser on a Camera Module 3 listing (tests/fixtures/v4l2, source in its
README.md) and on the older layouts quoted from rpicam-apps threads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.hw.libcamera import LibcameraCamera, LibcameraMode, parse_list_cameras
from tests.fuzz import examples

FIXTURE = Path(__file__).parents[1] / "fixtures" / "v4l2" / "rpicam-hello-list-cameras-imx708.txt"
IMX708_MODES = (
    LibcameraMode(format="SRGGB10_CSI2P", width=1536, height=864, fps=120.13, crop=(768, 432, 3072, 1728)),
    LibcameraMode(format="SRGGB10_CSI2P", width=2304, height=1296, fps=56.03, crop=(0, 0, 4608, 2592)),
    LibcameraMode(format="SRGGB10_CSI2P", width=4608, height=2592, fps=14.35, crop=(0, 0, 4608, 2592)),
)


def test_camera_module_3_pair_on_a_pi5() -> None:
    assert parse_list_cameras(FIXTURE.read_text()) == [
        LibcameraCamera(
            index=0,
            sensor="imx708",
            path="/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a",
            modes=IMX708_MODES,
            pixel_array=(4608, 2592),
            bayer="10-bit RGGB",
        ),
        LibcameraCamera(
            index=1,
            sensor="imx708_wide",
            path="/base/axi/pcie@120000/rp1/i2c@80000/imx708@1a",
            modes=IMX708_MODES,
            pixel_array=(4608, 2592),
            bayer="10-bit RGGB",
        ),
    ]


def test_log_lines_and_verbose_control_tables_are_skipped() -> None:
    # Log line as rpicam-apps prints it (will127534/StarlightEye#35); the --verbose table as in a Pi 5
    # troubleshooting guide: "Available controls for 4608x2592 SRGGB10_CSI2P mode:".
    listing = (
        "[0:00:56.036612095] [1584]  INFO Camera camera_manager.cpp:326 libcamera v0.0.0+5533-fdffe416\n"
        + FIXTURE.read_text().split("\n\n")[0]
        + "\n\n    Available controls for 4608x2592 SRGGB10_CSI2P mode:\n"
        "    ----------------------------------------------------\n"
        "        ScalerCrop : [(0, 0)/64x64..(0, 0)/4608x2592]\n"
    )
    (camera,) = parse_list_cameras(listing)
    assert (camera.sensor, camera.modes) == ("imx708", IMX708_MODES)


def test_2021_layout_sizes_on_one_line() -> None:
    # libcamera-hello --list-cameras as shown in raspberrypi/rpicam-apps#215 (HQ camera).
    listing = (
        "Available cameras\n"
        "-----------------\n"
        "0 : imx477 [4056x3040] (/base/soc/i2c0mux/i2c@1/imx477@1a)\n"
        "    Modes: 'SRGGB10_CSI2P' : 1332x990 \n"  # sic: a trailing space
        "           'SRGGB12_CSI2P' : 2028x1080 2028x1520 4056x3040\n"
    )
    (hq,) = parse_list_cameras(listing)
    assert (hq.sensor, hq.pixel_array, hq.bayer) == ("imx477", (4056, 3040), "")
    assert [(m.format, m.width, m.height, m.fps) for m in hq.modes] == [
        ("SRGGB10_CSI2P", 1332, 990, None),
        ("SRGGB12_CSI2P", 2028, 1080, None),
        ("SRGGB12_CSI2P", 2028, 1520, None),
        ("SRGGB12_CSI2P", 4056, 3040, None),
    ]


def test_2022_layout_rates_in_parentheses() -> None:
    # The layout proposed in raspberrypi/rpicam-apps#312.
    listing = """0 : imx477 [4056x3040] (/base/soc/i2c0mux/i2c@1/imx477@1a)
    Modes: 'SRGGB10_CSI2P' : 1332x990 (120.00 fps)
           'SRGGB12_CSI2P' : 2028x1080 (50.00 fps), 2028x1520 (40.00 fps), 4056x3040 (10.00 fps)
"""
    (hq,) = parse_list_cameras(listing)
    assert [(m.width, m.fps) for m in hq.modes] == [(1332, 120.0), (2028, 50.0), (2028, 40.0), (4056, 10.0)]


def test_no_cameras() -> None:
    assert parse_list_cameras("No cameras available!\n") == []
    assert parse_list_cameras("") == []


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        ("    Modes: 'SRGGB10_CSI2P' : 1536x864 [120.13 fps]\n", "before any camera"),
        ("0 : imx708 [4608x2592] (/base/x)\n    Modes: 'SRGGB10_CSI2P' : 0x864\n", "out of range"),
    ],
)
def test_malformed_listings_raise_value_error(listing: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_list_cameras(listing)


_LINES = FIXTURE.read_text().splitlines()


@settings(max_examples=examples(300))
@given(st.lists(st.sampled_from(_LINES) | st.text(max_size=60), max_size=30))
def test_fuzz_any_text_gives_cameras_or_value_error(lines: list[str]) -> None:
    try:
        cameras = parse_list_cameras("\n".join(lines))
    except ValueError:
        return
    assert all(isinstance(c, LibcameraCamera) for c in cameras)
