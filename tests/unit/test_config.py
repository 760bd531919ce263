from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import config as c
from appliance.config import Address, Config, ConfigError, load, load_file


def test_defaults_need_no_file() -> None:
    cfg = load_file(None)
    assert cfg == Config()
    assert cfg.rtmp.listen == Address("0.0.0.0", 1935)
    assert cfg.web.listen == Address("0.0.0.0", 8080)
    assert cfg.capture.source == "auto"
    assert cfg.capture.stream == "live/cam"
    assert cfg.state.dir is None


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.web = c.WebConfig()  # type: ignore[misc]


def test_full_file(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(
        """
[rtmp]
listen = "127.0.0.1:19350"
[web]
listen = "[::1]:8081"
[capture]
source = "none"
[state]
dir = "/srv/appliance"
[log]
format = "json"
level = "debug"
[supervisor]
max_restarts = 3
window = "2m"
backoff_initial = "200ms"
backoff_max = "1m"
critical_grace = "3s"
shutdown_timeout = "5s"
"""
    )
    cfg = load_file(path)
    assert cfg.rtmp.listen == Address("127.0.0.1", 19350)
    assert cfg.web.listen == Address("::1", 8081)
    assert str(cfg.web.listen) == "[::1]:8081"
    assert cfg.capture.source == "none"
    assert cfg.state.path == Path("/srv/appliance")
    assert cfg.log.format == "json"
    s = cfg.supervisor
    assert (s.max_restarts, s.window_s, s.backoff_initial_s, s.backoff_max_s) == (3, 120.0, 0.2, 60.0)
    assert (s.critical_grace_s, s.shutdown_s) == (3.0, 5.0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("web.lisen=1.2.3.4:80", "web.lisen: unknown key (did you mean 'listen'?)"),
        ("rtmpp.listen=1.2.3.4:80", "[rtmpp]: unknown section (did you mean 'rtmp'?)"),
        ("web.listen=localhost", "web.listen='localhost': want \"host:port\""),
        ("web.listen=1.2.3.4:70000", "web.listen='1.2.3.4:70000': want \"host:port\""),
        ("web.listen=[nothex]:80", "web.listen='[nothex]:80'"),
        ("supervisor.window=5", "supervisor.window=5: want a duration with a unit"),
        ("supervisor.window=0s", "supervisor.window='0s': want a value above zero"),
        ("supervisor.max_restarts=0", "supervisor.max_restarts=0: want an integer from 1 to 1000"),
        ("supervisor.max_restarts=true", "supervisor.max_restarts=True: want an integer"),
        ("capture.source=usb", 'capture.source=\'usb\': want one of "auto", "v4l2"'),
        ("log.format=xml", "log.format='xml': want one of"),
        (
            "supervisor.backoff_max=100ms",
            "supervisor.backoff_max='100ms': want at least supervisor.backoff_initial",
        ),
    ],
)
def test_bad_values_name_key_value_and_expectation(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(None, [override])
    assert message in str(info.value)


def test_overrides_apply_over_file(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('[web]\nlisten = "127.0.0.1:1"\n')
    cfg = load_file(path, ["web.listen=127.0.0.1:0", 'device.name="north gate"', "supervisor.max_restarts=9"])
    assert cfg.web.listen == Address("127.0.0.1", 0)
    assert cfg.device.name == "north gate"
    assert cfg.supervisor.max_restarts == 9


@pytest.mark.parametrize("bad", ["nodot=1", "web.listen", ".x=1", "web.=1"])
def test_malformed_override(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"want section\.key=value"):
        load_file(None, [bad])


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[web\nlisten=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(tmp_path / "missing.toml")


def test_section_must_be_table() -> None:
    with pytest.raises(ConfigError, match=r"\[web\]=1: want a table"):
        load({"web": 1})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("200ms", 0.2), ("2m", 120.0), ("1h", 3600.0), ("1.5s", 1.5), ("1d", 86400.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert c.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [("500MB", 500_000_000), ("2GiB", 2 * 2**30), ("64KB", 64_000), ("10B", 10), ("1kib", 1024)],
)
def test_sizes(text: str, size: int) -> None:
    assert c.parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "bps"), [("2Mbit", 2_000_000), ("500kbit", 500_000), ("1.5Mbit/s", 1_500_000)]
)
def test_rates(text: str, bps: int) -> None:
    assert c.parse_rate(text) == bps


@pytest.mark.parametrize("bad", ["5", 5, "5 parsecs", "", "MB", "-1s"])
def test_bad_units(bad: object) -> None:
    for parser in (c.parse_duration, c.parse_size, c.parse_rate):
        with pytest.raises(ValueError):
            parser(bad)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h"]))
def test_duration_round_trip(n: int, unit: str) -> None:
    seconds = c.parse_duration(f"{n}{unit}")
    assert seconds == pytest.approx(n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit])


@given(st.text(max_size=30))
def test_address_parser_never_crashes(text: str) -> None:
    try:
        addr = c.parse_address(text)
    except ValueError:
        return
    assert 0 <= addr.port <= 65535
    assert c.parse_address(str(addr)) == addr


def test_changed_sections() -> None:
    a = load_file(None)
    b = load_file(None, ["web.listen=127.0.0.1:0", "log.level=debug"])
    assert c.changed_sections(a, b) == {"web", "log"}
    assert c.changed_sections(a, a) == set()


def test_to_dict_uses_toml_names_and_units() -> None:
    d = load_file(None, ["supervisor.backoff_initial=250ms"]).to_dict()
    assert d["supervisor"]["backoff_initial"] == "250ms"
    assert d["supervisor"]["window"] == "60s"
    assert d["web"]["listen"] == "0.0.0.0:8080"
    # what to_dict renders loads back to the same config
    again = load({k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in d.items()})
    assert again.to_dict() == d


def test_describe_lists_every_key() -> None:
    keys = {row[0] for row in c.describe()}
    assert {"rtmp.listen", "web.listen", "capture.source", "state.dir", "log.format"} <= keys


def test_state_dir_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(c.os, "access", lambda *a: False)
    assert c.default_state_dir() == tmp_path / "var"
    monkeypatch.setattr(c.os, "access", lambda *a: True)
    assert c.default_state_dir() == Path("/var/lib/appliance")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["capture.width=1279"], "capture.width=1279: want an even number (4:2:0 video)"),
        (["capture.height=5000"], "capture.height=5000: want an integer from 16 to 2304"),
        (["capture.source=file"], 'capture.file: required when capture.source = "file"'),
        (["capture.encoder=x264"], 'capture.encoder=\'x264\': want "auto", "h264_v4l2m2m"'),
        (["capture.device=video0"], "capture.device='video0': want a device path like \"/dev/video0\""),
        (["capture.stream=cam"], "capture.stream='cam': want a stream name \"app/key\""),
        (
            ["capture.stream=cams/front"],
            "capture.stream='cams/front': app 'cams' is not in rtmp.apps ['live']",
        ),
        (["capture.gop=10ms"], "capture.gop='10ms': shorter than one frame at 30 fps"),
        (["capture.bitrate=2M"], "capture.bitrate='2M': want a bit rate with a unit"),
    ],
)
def test_capture_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_file(None, overrides)
    assert message in str(e.value)


def test_capture_settings_parse_and_render() -> None:
    cfg = load_file(
        None, ["capture.bitrate=1.5Mbit", "capture.gop=1s", "capture.fps=25", "capture.source=none"]
    )
    assert (cfg.capture.bitrate_bps, cfg.capture.gop_frames) == (1_500_000, 25)
    assert cfg.to_dict()["capture"]["bitrate"] == "1500kbit"
    assert cfg.to_dict()["capture"]["audio_bitrate"] == "128kbit"
    # No camera: the stream's app need not be an RTMP app.
    assert (
        load_file(None, ["capture.source=none", "capture.stream=cams/front"]).capture.stream == "cams/front"
    )


def test_push_targets_parse_and_never_show_their_keys(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(
        """
[[push.targets]]
name = "youtube"
url = "rtmps://a.rtmp.youtube.com/live2/abcd-efgh-SECRET"
[[push.targets]]
name = "lab"
url = "rtmp://10.0.0.5/live/x"
source = "live/other"
verify_tls = false
enabled = false
"""
    )
    cfg = load_file(path)
    youtube, lab = cfg.push.targets
    assert (youtube.name, youtube.source, youtube.verify_tls, youtube.enabled) == (
        "youtube",
        "live/cam",
        True,
        True,
    )
    assert (lab.source, lab.verify_tls, lab.enabled) == ("live/other", False, False)
    shown = cfg.to_dict()["push"]["targets"]
    assert shown[0]["url"] == "rtmps://a.rtmp.youtube.com/live2/<key>"
    assert "SECRET" not in str(cfg.to_dict())


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'name = "a"\nurl = "srt://x/live/k"',
            "push.targets=<secret>: [a].url: want rtmp://HOST[:PORT]/APP/KEY",
        ),
        (
            'name = "a"\nurl = "http://x/live/k"',
            "push.targets=<secret>: [a].url: http:// to x: the token would go in clear; use https://",
        ),
        ('name = "a"\nurl = "rtmp://x/live/k"\ntoken = "t"', "[a].token: only for WHIP (https://) URLs"),
        ('name = "a"\nurl = "https://x/whip/k"\ntoken = 5', "[a].token: want a string"),
        ('name = "a"\nurl = "rtmp://x/live"', "[a].url: no app or stream key in the path; want rtmp://"),
        ('url = "rtmp://x/live/k"', "[0].name: want a name"),
        (
            'name = "a"\nurl = "rtmp://x/live/k"\nverfy_tls = false',
            "[0].verfy_tls: unknown key (did you mean 'verify_tls'?)",
        ),
        ('name = "a"\nurl = "rtmp://x/live/k"\nsource = "cam"', '[a].source: want a stream name "app/key"'),
    ],
)
def test_push_target_errors_name_the_key_not_the_secret(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "a.toml"
    path.write_text(f"[[push.targets]]\n{table}\n")
    with pytest.raises(ConfigError) as e:
        load_file(path)
    assert message in str(e.value)
    assert "rtmp://x/live/k" not in str(e.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cloud.url=ws://fleet.example.com/device", "plain ws:// only to loopback"),
        ("cloud.url=https://fleet.example.com", 'want "" (off), wss://HOST[:PORT]/PATH'),
        ("cloud.deadman=0s", "cloud.deadman='0s': want a value above zero"),
    ],
)
def test_cloud_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_file(None, [override])
    assert message in str(e.value)


def test_cloud_token_is_never_shown() -> None:
    cfg = load_file(None, ["cloud.url=wss://fleet.example.com/device", "cloud.token=very-secret"])
    assert cfg.cloud.token == "very-secret" and cfg.cloud.deadman_s == 60.0
    assert cfg.to_dict()["cloud"]["token"] == "<set>"
    assert load_file(None, ["cloud.url=ws://127.0.0.1:9000/d"]).cloud.url == "ws://127.0.0.1:9000/d"
