"""Long fuzzing: the property tests (Bus, packets, supervisor, RTMP, media parsers) at 20x, random seeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
PROPERTY_TESTS = [
    "tests/unit/test_bus.py",
    "tests/unit/test_packets.py",
    "tests/unit/test_supervisor_properties.py",
    "tests/unit/test_rtmp_chunk.py",
    "tests/unit/test_rtmp_fuzz.py",
    "tests/unit/test_rtmp_session.py",
    "tests/unit/test_rtmp_amf0.py",
    "tests/unit/test_rtmp_amf3.py",
    "tests/unit/test_rtmp_handshake.py",
    "tests/unit/test_flv.py",
    "tests/unit/test_flv_file.py",
    "tests/unit/test_h264.py",
    "tests/unit/test_hevc.py",
    "tests/unit/test_aac.py",
    "tests/unit/test_v4l2.py",
    "tests/unit/test_libcamera.py",
]


@pytest.mark.slow
@pytest.mark.parametrize("path", PROPERTY_TESTS)
def test_property_tests_at_scale(path: str) -> None:
    env = {
        k: v for k, v in os.environ.items() if k != "APPLIANCE_REQUIRE_PEERS"
    }  # random seeds, not ci's fixed one
    env["APPLIANCE_FUZZ_SCALE"] = os.environ.get("APPLIANCE_FUZZ_SCALE_SLOW", "20")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path],
        cwd=TOP,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
