from __future__ import annotations

from pathlib import Path

import pytest

from appliance import __version__
from appliance.cli import main
from appliance.hw import board


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"appliance {__version__}"


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a.toml"
    f.write_text('[capture]\nsource = "none"\n')
    assert main(["check-config", str(f)]) == 0
    assert "ok" in capsys.readouterr().out


def test_check_config_bad_key_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a.toml"
    f.write_text('[capture]\nsorce = "none"\n')
    assert main(["check-config", str(f)]) == 2
    err = capsys.readouterr().err
    assert "capture.sorce: unknown key (did you mean 'source'?)" in err


def test_check_config_bad_value_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a.toml"
    f.write_text('[supervisor]\nwindow = "soon"\n')
    assert main(["check-config", str(f)]) == 2
    assert "supervisor.window='soon': want a duration with a unit" in capsys.readouterr().err


def test_check_config_set_override_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a.toml"
    f.write_text("")
    assert main(["check-config", str(f), "--set", "web.listen=nope"]) == 2
    assert "web.listen='nope'" in capsys.readouterr().err


def test_check_config_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--list"]) == 0
    out = capsys.readouterr().out
    assert "rtmp.listen" in out and "'0.0.0.0:1935'" in out


def test_status_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", "http://127.0.0.1:9", "--timeout", "2"]) == 1
    assert "cannot read http://127.0.0.1:9/api/status" in capsys.readouterr().err


def test_probe_prints_board_cameras_and_the_encoder_chosen_with_reasons(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["probe"]) == 0
    out = capsys.readouterr().out
    assert "board:" in out and "cameras (V4L2" in out and "cameras (libcamera)" in out
    # This machine has no camera and no hardware encoder: the probe says so and picks libx264.
    assert "none (no /dev/video*)" in out
    assert "chosen: libx264" in out
    v4l2m2m = next(line for line in out.splitlines() if line.strip().startswith("h264_v4l2m2m"))
    assert "unavailable" in v4l2m2m and v4l2m2m.split(":", 1)[1].strip()


def test_board_from_device_tree_fixture(tmp_path: Path) -> None:
    dt = tmp_path / "proc/device-tree"
    dt.mkdir(parents=True)
    (dt / "model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    v4l = tmp_path / "sys/class/video4linux"
    for node, name in [
        ("video0", "unicam-image"),
        ("video10", "bcm2835-codec-decode"),
        ("video1", "unicam-embedded"),
    ]:
        (v4l / node).mkdir(parents=True)
        (v4l / node / "name").write_text(name + "\n")
    info = board.probe_board(tmp_path)
    assert info["model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert info["family"] == "rpi" and info["model_source"] == "device-tree"
    nodes = board.probe_video_nodes(tmp_path)
    assert [n["device"] for n in nodes] == ["/dev/video0", "/dev/video1", "/dev/video10"]
    assert nodes[2]["name"] == "bcm2835-codec-decode"


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("Raspberry Pi 5 Model B Rev 1.0", "rpi5"),
        ("NVIDIA Jetson Orin Nano Developer Kit", "jetson"),
        ("QEMU", "generic"),
    ],
)
def test_board_family(model: str, family: str) -> None:
    assert board.board_family(model) == family


def test_board_from_dmi_fixture(tmp_path: Path) -> None:
    dmi = tmp_path / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").write_text("LENOVO\n")
    (dmi / "product_name").write_text("20XW\n")
    assert board.probe_board(tmp_path)["model"] == "LENOVO 20XW"
    assert board.probe_board(tmp_path / "empty")["model"] == "unknown"
