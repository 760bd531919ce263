"""The capture service's decisions and tracks, without a camera: fixture nodes from real cameras, sysfs
trees for re-plugs, and PyAV reading files in place of /dev/video0."""

from __future__ import annotations

import dataclasses
import fractions
import itertools
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import av
import pytest
import trio

from appliance.bus import BusRegistry
from appliance.config import CaptureConfig
from appliance.errors import sole_exception
from appliance.hw import v4l2
from appliance.hw.v4l2 import CAP_META_CAPTURE, VideoNode
from appliance.media.capture import service as capture_service
from appliance.media.capture.devices import AlsaAudio, V4l2Video
from appliance.media.capture.service import CaptureService
from appliance.media.capture.synthetic import SyntheticVideo
from appliance.media.capture.tracks import CaptureClock, CaptureError, CaptureLostError, Item, Sink
from appliance.media.capture.worker import TrioSink, run_tracks
from appliance.media.encode import AudioEncoder, VideoEncoder
from appliance.media.packets import Codec, CodecConfig, Packet

FIXTURES = Path(__file__).parents[1] / "fixtures"
SYSFS = FIXTURES / "sysfs"
V4L2 = FIXTURES / "v4l2"
PI4 = {"model": "Raspberry Pi 4 Model B Rev 1.4", "family": "rpi", "arch": "aarch64"}


def fixture_node(name: str, path: str) -> VideoNode:
    return v4l2.node_from_v4l2_ctl(path, (V4L2 / name).read_text())


def codec_node(path: str) -> VideoNode:
    text = (V4L2 / "pi4-nodes.txt").read_text()
    block = text.split(f"DEVICE: {path}\n", 1)[1].split("DEVICE: ", 1)[0]
    return v4l2.node_from_v4l2_ctl(path, block.split("\n", 1)[1])


def metadata_node(path: str) -> VideoNode:
    return VideoNode(path=path, card="HD Pro Webcam C920", driver="uvcvideo", bus_info="usb-1.2",
                     device_caps=CAP_META_CAPTURE, formats=())  # fmt: skip


@pytest.fixture
def nodes(monkeypatch: pytest.MonkeyPatch) -> dict[str, VideoNode]:
    """What query_node returns per path; tests rearrange it to plug and unplug cameras."""
    table = {
        "/dev/video0": fixture_node("c920-h264.txt", "/dev/video0"),
        "/dev/video1": metadata_node("/dev/video1"),
        "/dev/video2": fixture_node("ms2109.txt", "/dev/video2"),
        "/dev/video3": metadata_node("/dev/video3"),
        "/dev/video10": codec_node("/dev/video10"),
    }

    def query(path: str) -> VideoNode:
        if path not in table:
            raise v4l2.V4l2Error(path, "No such device")
        return table[path]

    monkeypatch.setattr(v4l2, "query_node", query)
    return table


def service(root: Path, **cfg: object) -> CaptureService:
    settings = {"rpicam_command": "no-such-rpicam-vid", **cfg}
    return CaptureService(CaptureConfig(**settings), BusRegistry(), board=PI4, root=root)  # type: ignore[arg-type]


def test_auto_takes_the_usb_camera_with_h264_passthrough_and_says_why_not_the_rest(
    nodes: dict[str, VideoNode],
) -> None:
    svc = service(SYSFS / "pi4")
    plan = svc._make_plan()
    assert (plan.source, plan.device) == ("v4l2", "/dev/video0")
    assert plan.choice is not None and plan.choice.passthrough and plan.choice.fourcc == "H264"
    assert (plan.width, plan.height, plan.fps) == (1280, 720, 30.0)
    assert "HD Pro Webcam C920" in plan.reason
    skipped = dict(plan.skipped)
    assert "/dev/video10" in skipped and "memory-to-memory" in skipped["/dev/video10"]
    assert plan.to_dict()["passthrough"] is True


def test_a_replugged_camera_is_found_under_its_new_node(nodes: dict[str, VideoNode]) -> None:
    svc = service(SYSFS / "pi4")
    svc.plan = svc._make_plan()
    # Re-plugged: the HDMI dongle now has video0, the C920 came back as video2.
    nodes["/dev/video0"], nodes["/dev/video2"] = (
        dataclasses.replace(nodes["/dev/video2"], path="/dev/video0"),
        dataclasses.replace(nodes["/dev/video0"], path="/dev/video2"),
    )
    svc.root = SYSFS / "pi4-replugged"
    plan = svc._make_plan()
    assert (plan.source, plan.device) == ("v4l2", "/dev/video2")
    assert plan.choice is not None and plan.choice.fourcc == "H264"


def test_an_unplugged_camera_is_waited_for_not_replaced_by_another(
    nodes: dict[str, VideoNode], tmp_path: Path
) -> None:
    svc = service(SYSFS / "pi4")
    svc.plan = svc._make_plan()
    svc.root = tmp_path  # no video4linux nodes at all
    with pytest.raises(CaptureLostError, match=r"camera 046d:082d serial B61DEDAF .* not connected"):
        svc._make_plan()


def test_a_device_that_is_not_a_camera_is_refused_naming_the_key(nodes: dict[str, VideoNode]) -> None:
    svc = service(SYSFS / "pi4", source="v4l2", device="/dev/video10")
    with pytest.raises(CaptureError, match=r"^capture.device='/dev/video10' \(.*\): .*memory-to-memory"):
        svc._make_plan()


def test_auto_without_any_camera_falls_back_to_synthetic_saying_why(tmp_path: Path) -> None:
    plan = service(tmp_path)._make_plan()
    assert plan.source == "synthetic"
    assert plan.reason == (
        "auto: no V4L2 camera found; no Raspberry Pi camera (rpicam-vid not installed): synthetic camera"
    )


class ListSink:
    """A Sink for tracks run directly in this thread."""

    def __init__(self, stop: threading.Event, want_packets: int) -> None:
        self.clock = CaptureClock()
        self.items: list[Item] = []
        self._stop = stop
        self._want = want_packets

    def emit(self, items: Sequence[Item]) -> None:
        self.items.extend(items)
        if sum(isinstance(i, Packet) for i in self.items) >= self._want:
            self._stop.set()

    @property
    def packets(self) -> list[Packet]:
        return [i for i in self.items if isinstance(i, Packet)]


def write_clip(path: Path, codec: str, pix_fmt: str, frames: int = 20) -> Path:
    """A small clip as a camera would send it: raw H.264 (Annex-B), MJPEG, or raw YUYV."""
    with av.open(str(path), "w", format={"h264": "h264", "mjpeg": "mjpeg", "rawvideo": "nut"}[codec]) as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, pix_fmt
        if codec == "h264":
            stream.options = {"preset": "ultrafast", "g": "10"}
        for n in range(frames):
            frame = av.VideoFrame(320, 240, "yuv420p")
            for plane in frame.planes:
                memoryview(plane)[:] = bytes([(n * 8) % 256]) * plane.buffer_size
            frame = frame.reformat(format=pix_fmt)
            frame.pts, frame.time_base = n, fractions.Fraction(1, 30)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def camera_from_file(clip: Path, fmt: str):  # type: ignore[no-untyped-def]
    def open_input(path: str, *, format: str, options: dict[str, str]) -> av.container.InputContainer:
        assert (format, options["video_size"], options["framerate"]) == ("video4linux2", "320x240", "30")
        return av.open(str(clip), format=fmt)

    return open_input


def test_v4l2_h264_passes_through_without_reencoding(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "cam.h264", "h264", "yuv420p")
    stop = threading.Event()
    sink = ListSink(stop, want_packets=15)
    track = V4l2Video("/dev/video0", input_format="h264", width=320, height=240, fps=30, encoder=None,
                      open_input=camera_from_file(clip, "h264"))  # fmt: skip
    track.run(sink, stop)
    configs = [i for i in sink.items if isinstance(i, CodecConfig)]
    assert len(configs) == 1 and (configs[0].width, configs[0].height) == (320, 240)
    packets = sink.packets
    assert packets[0].keyframe and sum(p.keyframe for p in packets) == 2  # the camera's own GOP of 10
    assert all(n[0] & 0x1F not in (7, 8, 9) for p in packets for n in p.nal_units())  # SPS/PPS out of band
    stamps = [p.dts_ms for p in packets]
    assert stamps == sorted(set(stamps))


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "fmt"), [("mjpeg", "yuvj420p", "mjpeg"), ("rawvideo", "yuyv422", "nut")]
)
def test_v4l2_mjpeg_and_raw_frames_are_encoded_to_h264(
    tmp_path: Path, codec: str, pix_fmt: str, fmt: str
) -> None:
    clip = write_clip(tmp_path / f"cam.{fmt}", codec, pix_fmt)
    encoder = VideoEncoder(
        "libx264", width=320, height=240, fps=30, bitrate_bps=500_000, gop=10, profile="baseline"
    )
    stop = threading.Event()
    sink = ListSink(stop, want_packets=12)
    track = V4l2Video("/dev/video0", input_format=codec, width=320, height=240, fps=30, encoder=encoder,
                      open_input=camera_from_file(clip, fmt))  # fmt: skip
    track.run(sink, stop)
    assert all(p.codec is Codec.H264 for p in sink.packets)
    assert [p.keyframe for p in sink.packets[:11]] == [True] + [False] * 9 + [True]


def test_v4l2_read_error_is_a_lost_camera(tmp_path: Path) -> None:
    def gone(path: str, **kwargs: object) -> None:
        raise av.error.FileNotFoundError(2, "No such file or directory", path)

    track = V4l2Video(
        "/dev/video9", input_format="h264", width=320, height=240, fps=30, encoder=None, open_input=gone
    )
    with pytest.raises(CaptureLostError, match=r"capture.device='/dev/video9': cannot open"):
        track.run(ListSink(threading.Event(), 1), threading.Event())


def test_encoder_keyframe_requests_are_rate_limited_and_bitrate_changes_live() -> None:
    now = [0.0]
    encoder = VideoEncoder("libx264", width=320, height=240, fps=30, bitrate_bps=1_000_000, gop=300,
                           profile="baseline", monotonic=lambda: now[0])  # fmt: skip

    def encode(n: int) -> list[Packet]:
        frame = av.VideoFrame(320, 240, "yuv420p")
        for plane in frame.planes:
            memoryview(plane)[:] = bytes([(n * 37) % 256]) * plane.buffer_size
        now[0] = n / 30
        return [i for i in encoder.encode(frame, n * 33) if isinstance(i, Packet)]

    first = [p for n in range(5) for p in encode(n)]
    assert [p.keyframe for p in first] == [True, False, False, False, False]
    for _ in range(10):
        encoder.request_keyframe()  # ten viewers' PLIs at once
    burst = [p for n in range(5, 30) for p in encode(n)]  # up to 0.97 s after the first keyframe ...
    assert sum(p.keyframe for p in burst) == 0
    later = [p for n in range(30, 40) for p in encode(n)]
    assert later[0].keyframe and sum(p.keyframe for p in later) == 1  # ... then exactly one, at 1 s
    assert encoder.stats()["keyframes_forced"] == 1 and encoder.stats()["keyframe_requests"] == 10
    encoder.set_bitrate(200_000)
    assert encoder.bitrate_bps == 1_000_000  # applied by the next frame, in the encoding thread
    encode(40)
    assert encoder.bitrate_bps == 200_000 and encoder.stats()["reopens"] == 0  # libx264: live, no reopen
    encoder.set_bitrate(2_000_000)  # above the ceiling it opened with: reopened, starting with an IDR
    assert encode(41)[0].keyframe and encoder.stats()["reopens"] == 1
    with pytest.raises(ValueError, match="bitrate_bps"):
        encoder.set_bitrate(0)


class RecordingExit(SyntheticVideo):
    exited_at: float | None = None

    def run(self, sink: Sink, stop: threading.Event) -> None:
        try:
            super().run(sink, stop)
        finally:
            self.exited_at = time.monotonic()


async def test_cancelling_capture_stops_its_thread_within_a_frame() -> None:
    buses = BusRegistry()
    clock = CaptureClock()
    encoder = VideoEncoder(
        "libx264", width=320, height=240, fps=10, bitrate_bps=300_000, gop=20, profile="baseline"
    )
    track = RecordingExit(encoder, width=320, height=240, fps=10, start_ms=clock.now_ms())
    with buses.publish("live/cam") as producer:
        sink = TrioSink(producer, clock)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_tracks, [track], sink)
            with trio.fail_after(10):
                await sink.first_video.wait()
            cancelled_at = time.monotonic()
            nursery.cancel_scope.cancel()
        # run_tracks returned only after the thread let go of its source and encoder:
        assert track.exited_at is not None
        assert track.exited_at - cancelled_at < 0.1 + 0.5  # one frame at 10 fps, plus slack for a busy CI
    assert sink.video_packets >= 1


def test_alsa_audio_is_encoded_to_aac_on_the_capture_clock(tmp_path: Path) -> None:
    # A WAV file stands in for the sound card (the same demux -> decode -> AAC path FFmpeg's alsa gives).
    wav = tmp_path / "mic.wav"
    with av.open(str(wav), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=44_100, layout="stereo")
        for n in range(40):
            frame = av.AudioFrame(format="s16", layout="stereo", samples=1024)
            frame.planes[0].update(bytes([n % 256]) * frame.planes[0].buffer_size)
            frame.sample_rate, frame.pts = 44_100, n * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))

    def open_input(device: str, *, format: str, options: dict[str, str]) -> av.container.InputContainer:
        assert (device, format, options) == ("hw:1,0", "alsa", {"sample_rate": "48000", "channels": "1"})
        return av.open(str(wav))

    stop = threading.Event()
    sink = ListSink(stop, want_packets=30)
    AlsaAudio("hw:1,0", AudioEncoder(), open_input=open_input).run(sink, stop)
    config = sink.items[0]
    assert isinstance(config, CodecConfig) and config.codec is Codec.AAC
    assert (config.sample_rate, config.channels) == (48_000, 1)  # resampled and downmixed for the stream
    packets = sink.packets
    assert len(packets) >= 30 and all(p.codec is Codec.AAC for p in packets)
    steps = [b.dts_ms - a.dts_ms for a, b in itertools.pairwise(packets)]
    # 1024 samples at 48 kHz, counted exactly; the file reads faster than a sound card, so the timeline
    # re-anchors on the capture clock, and then moves on, never back.
    assert min(steps) >= 21
    assert sorted(steps)[len(steps) // 2] in (21, 22)


def test_alsa_device_that_cannot_open_is_a_lost_source() -> None:
    def busy(device: str, **kwargs: object) -> None:
        raise av.error.OSError(16, "Device or resource busy", device)

    with pytest.raises(CaptureLostError, match=r"capture.audio_device='hw:1,0': cannot open"):
        AlsaAudio("hw:1,0", AudioEncoder(), open_input=busy).run(
            ListSink(threading.Event(), 1), threading.Event()
        )


async def test_auto_moves_from_synthetic_to_a_camera_plugged_in_later(
    nodes: dict[str, VideoNode], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture_service, "RESCAN_S", 0.05)
    svc = service(tmp_path, width=320, height=240, fps=10)  # auto, and no camera yet
    with pytest.raises(BaseExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            await nursery.start(svc.run)
            assert svc.plan is not None and svc.plan.source == "synthetic"
            assert svc.state == "running" and svc.describe()["encoder"]["encoder"] == "libx264"  # type: ignore[index]
            svc.root = SYSFS / "pi4"  # the C920 is plugged in
            with trio.fail_after(10):
                await trio.sleep_forever()
    # The rescan found it and capture moved to it; there is no real /dev/video0 here, so opening it fails,
    # which is what a supervisor restart would then retry.
    error = sole_exception(raised.value)
    assert isinstance(error, CaptureLostError) and "capture.device='/dev/video0': cannot open" in str(error)
    assert svc.plan is not None and (svc.plan.source, svc.plan.device) == ("v4l2", "/dev/video0")
    assert svc.runs == 2 and svc.last_error == str(error)
