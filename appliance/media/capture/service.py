"""The capture child: choose a source and an encoder, run the tracks, publish into the camera's Bus.

Theory of operation
-------------------
`CaptureService` lives as long as its config; the supervisor calls `run()` again after every failure.
Each run makes a plan (which source, which device and mode, which encoder), publishes the stream
(`capture.stream`, default `live/cam`) and runs the source's tracks in worker threads until they fail.

- `auto` looks for a V4L2 camera (skipping the codec, ISP and m2m nodes every Pi has), then a libcamera
  camera through rpicam-vid, else falls back to the synthetic camera. Once a real camera was found the
  choice sticks: if it is unplugged, capture fails and is retried with the supervisor's backoff until
  that camera (same node, or the same USB vendor/product/serial under a new node) is back. While `auto`
  runs the synthetic camera, a camera plugged in later is noticed within `RESCAN_S` and taken.
- The encoder probe (opening each candidate for real) runs once per service, in a thread.
- The run is "started" for the supervisor when the first video packet reached the Bus; no frame within
  `FIRST_FRAME_S`, or none for `STALL_S` later, fails it: a hung camera is restarted like a lost one.
- Players of the stream see UnpublishNotify when a run ends and PublishNotify when the next one starts;
  the Bus keeps its subscribers and rebases timestamps, and the capture clock never goes back anyway.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from appliance import __version__
from appliance.bus import BusRegistry
from appliance.config import CaptureConfig
from appliance.errors import sole_exception
from appliance.hw import encoders as hw_encoders
from appliance.hw import libcamera, v4l2
from appliance.hw.board import probe_board
from appliance.log import quote
from appliance.media.capture.devices import AlsaAudio, RpicamVideo, V4l2Video, rpicam_command
from appliance.media.capture.file import FileTrack
from appliance.media.capture.synthetic import SyntheticAudio, SyntheticVideo
from appliance.media.capture.tracks import CaptureClock, CaptureError, CaptureLostError, Track
from appliance.media.capture.worker import TrioSink, run_tracks
from appliance.media.encode import AudioEncoder, VideoEncoder

__all__ = ["CaptureService", "Plan"]

log = logging.getLogger("appliance.capture")

FIRST_FRAME_S = 10.0
STALL_S = 5.0
RESCAN_S = 2.0
_LEAD_MS = 50.0  # tracks of one source start this far ahead, together


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one capture run will do, and why."""

    source: str  # synthetic | file | v4l2 | rpicam | none
    reason: str
    device: str | None = None
    choice: v4l2.Choice | None = None
    rpicam_mode: str | None = None
    width: int = 0
    height: int = 0
    fps: float = 0.0
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (device, why not) from discovery

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "source": self.source,
            "reason": self.reason,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
        }
        if self.device:
            out["device"] = self.device
        if self.choice is not None:
            out["format"] = self.choice.fourcc
            out["passthrough"] = self.choice.passthrough
        if self.rpicam_mode:
            out["rpicam_mode"] = self.rpicam_mode
        if self.skipped:
            out["skipped"] = [{"device": d, "reason": r} for d, r in self.skipped]
        return out


class _Replan(Exception):
    """A better source appeared (auto mode): end this run and plan again."""


class CaptureService:
    """One camera: its source, encoder and Bus.

    Args:
        cfg: The [capture] section.
        buses: The process's Bus registry.
        board: `probe_board()` output (tests pass a fixture).
        root: File system root for sysfs/devices (tests pass a fixture tree).
    """

    def __init__(
        self,
        cfg: CaptureConfig,
        buses: BusRegistry,
        *,
        board: Mapping[str, str] | None = None,
        root: Path = Path("/"),
    ) -> None:
        self.cfg = cfg
        self.buses = buses
        self.board = dict(board) if board is not None else probe_board()
        self.root = root
        self.clock = CaptureClock()
        self.plan: Plan | None = None
        self.state = "starting"
        self.encoder_choice: hw_encoders.EncoderChoice | None = None
        self._encoder: VideoEncoder | None = None
        self._sink: TrioSink | None = None
        self._identity: v4l2.DeviceIdentity | None = None
        self._auto_camera: str | None = None  # "v4l2" or "rpicam" once auto found a real camera
        self.runs = 0
        self.last_error: str | None = None

    # -- controls (trio thread) ---------------------------------------------------------------------

    def request_keyframe(self) -> bool:
        """Ask the encoder for a keyframe (rate-limited). False when nothing is encoded here."""
        encoder = self._encoder
        if encoder is None:
            return False
        encoder.request_keyframe()
        return True

    def set_bitrate(self, bitrate_bps: int) -> bool:
        """Change the video bit rate live. False when nothing is encoded here (passthrough, none)."""
        encoder = self._encoder
        if encoder is None:
            return False
        encoder.set_bitrate(bitrate_bps)
        return True

    def publisher(self) -> dict[str, object] | None:
        """The camera as the publisher of its stream, for /api/streams (None while it isn't live)."""
        sink = self._sink
        if self.state != "running" or sink is None or self.plan is None:
            return None
        return {
            "protocol": "capture",
            "source": self.plan.source,
            "device": self.plan.device,
            "encoder": self._encoder.name if self._encoder is not None else "passthrough",
            "bitrate_bps": sink.meter.bps(trio.current_time()),
        }

    def describe(self) -> dict[str, object]:
        """The capture state for /api/status and the status page."""
        out: dict[str, object] = {
            "stream": self.cfg.stream,
            "configured": self.cfg.source,
            "state": self.state,
        }
        if self.plan is not None:
            out.update(self.plan.to_dict())
        if self._encoder is not None:
            out["encoder"] = self._encoder.stats()
        elif self.plan is not None and self.plan.source != "none":
            out["encoder"] = {"encoder": "none (camera's own H.264)"}
        if self.encoder_choice is not None:
            out["encoder_probe"] = {
                "chosen": self.encoder_choice.name,
                "reason": self.encoder_choice.reason,
                "candidates": [
                    {"name": p.name, "hardware": p.hardware, "available": p.available, "reason": p.reason}
                    for p in self.encoder_choice.probes
                ],
            }
        sink = self._sink
        if sink is not None:
            out["frames"] = sink.video_packets
            out["audio_packets"] = sink.audio_packets
            out["bytes"] = sink.bytes
        out["runs"] = self.runs
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    # -- the child ----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run capture until cancelled; raises CaptureError when the source fails (the supervisor retries)."""
        if self.cfg.source == "none":
            self.plan = Plan(
                source="none", reason="capture.source = none: the relay serves published streams"
            )
            self.state = "off"
            log.info("capture.off reason=%s", quote(self.plan.reason))
            task_status.started()
            await trio.sleep_forever()
        started = False
        while True:
            try:
                await self._run_once(None if started else task_status)
            except BaseException as exc:
                # Tracks fail inside nurseries: unwrap a lone error so the supervisor, the log and
                # /api/status say "camera gone", not "ExceptionGroup".
                leaf = sole_exception(exc)
                if isinstance(leaf, _Replan):
                    started = True
                    continue
                if isinstance(leaf, CaptureError):
                    self.last_error = str(leaf)
                    self.state = "failed"
                    if leaf is not exc:
                        raise leaf from None
                raise

    async def _run_once(self, task_status: trio.TaskStatus[None] | None) -> None:
        self.state = "starting"
        plan = await trio.to_thread.run_sync(self._make_plan)
        self.plan = plan
        log.info(
            "capture.plan source=%s device=%s size=%dx%d fps=%g reason=%s",
            plan.source, quote(plan.device or "-"), plan.width, plan.height, plan.fps, quote(plan.reason),
        )  # fmt: skip
        for device, why in plan.skipped:
            log.info("capture.skipped device=%s reason=%s", device, quote(why))
        tracks = await trio.to_thread.run_sync(self._build_tracks, plan)
        self.runs += 1
        with self.buses.publish(self.cfg.stream) as producer:
            sink = TrioSink(producer, self.clock)
            self._sink = sink
            producer.send_metadata(self._metadata(plan))
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_tracks, tracks, sink)
                    with trio.move_on_after(FIRST_FRAME_S):
                        await sink.first_video.wait()
                    if not sink.first_video.is_set():
                        raise CaptureLostError(
                            f"no video from the {plan.source} source within {FIRST_FRAME_S:g} s"
                        )
                    self.state = "running"
                    log.info(
                        "capture.started stream=%s source=%s encoder=%s",
                        self.cfg.stream, plan.source, self._encoder.name if self._encoder else "passthrough",
                    )  # fmt: skip
                    if task_status is not None:
                        task_status.started()
                    if plan.source == "synthetic" and self.cfg.source == "auto":
                        nursery.start_soon(self._watch_for_camera)
                    await self._watch_stall(sink, plan)
            finally:
                self._encoder = None
                self.state = "stopped"

    async def _watch_stall(self, sink: TrioSink, plan: Plan) -> None:
        while True:
            await trio.sleep(1.0)
            last = sink.last_video_at
            if last is not None and trio.current_time() - last > STALL_S:
                raise CaptureLostError(f"the {plan.source} source sent no video for {STALL_S:g} s")

    async def _watch_for_camera(self) -> None:
        while True:
            await trio.sleep(RESCAN_S)
            found = await trio.to_thread.run_sync(self._scan_v4l2)
            if found[0] is not None:
                node, _choice = found[0]
                log.info("capture.camera_appeared device=%s card=%s", node.path, quote(node.card))
                raise _Replan

    # -- planning (worker thread: ioctls, subprocesses, encoder probes) ------------------------------

    def _wish(self) -> v4l2.Wish:
        return v4l2.Wish(width=self.cfg.width, height=self.cfg.height, fps=float(self.cfg.fps))

    def _scan_v4l2(self) -> tuple[tuple[v4l2.VideoNode, v4l2.Choice] | None, list[tuple[str, str]]]:
        nodes: list[v4l2.VideoNode] = []
        skipped: list[tuple[str, str]] = []
        for path in v4l2.list_video_paths(self.root):
            try:
                nodes.append(v4l2.query_node(path))
            except v4l2.V4l2Error as e:
                skipped.append((path, str(e)))
        found = v4l2.survey(nodes, self._wish())
        skipped.extend((s.path, s.reason) for s in found.skipped)
        return (found.usable[0] if found.usable else None), skipped

    def _make_plan(self) -> Plan:
        cfg = self.cfg
        base = Plan(source=cfg.source, reason="", width=cfg.width, height=cfg.height, fps=float(cfg.fps))
        if cfg.source == "synthetic":
            return replace(base, reason="capture.source = synthetic")
        if cfg.source == "file":
            return replace(base, reason=f"capture.source = file ({cfg.file})", device=str(cfg.file))
        if cfg.source == "v4l2":
            return self._plan_v4l2(base, explicit=True)
        if cfg.source == "rpicam":
            return self._plan_rpicam(base, required=True)
        # auto
        if self._auto_camera == "v4l2":
            return self._plan_v4l2(base, explicit=False)
        if self._auto_camera == "rpicam":
            return self._plan_rpicam(base, required=True)
        picked, skipped = self._scan_v4l2()
        if picked is not None:
            self._auto_camera = "v4l2"
            return self._plan_v4l2(base, explicit=False, skipped=tuple(skipped))
        rpicam = self._plan_rpicam(base, required=False)
        if rpicam.source == "rpicam":
            self._auto_camera = "rpicam"
            return replace(rpicam, skipped=tuple(skipped))
        why = "no V4L2 camera" + (" usable" if skipped else " found") + f"; {rpicam.reason}"
        return replace(
            base, source="synthetic", reason=f"auto: {why}: synthetic camera", skipped=tuple(skipped)
        )

    def _plan_v4l2(self, base: Plan, *, explicit: bool, skipped: tuple[tuple[str, str], ...] = ()) -> Plan:
        key = "capture.device"
        path = self._device_path(explicit)
        try:
            node = v4l2.query_node(path)
        except v4l2.V4l2Error as e:
            raise CaptureLostError(f"{key}={path!r}: {e}") from e
        why_not = v4l2.unusable_reason(node)
        if why_not is not None:
            raise CaptureError(f"{key}={path!r} ({node.card}): {why_not}")
        try:
            choice = v4l2.negotiate(node.formats, self._wish())
        except v4l2.NegotiationError as e:
            raise CaptureError(f"{key}={path!r} ({node.card}): {e}") from e
        if self._identity is None:
            self._identity = v4l2.device_identity(path, self.root)
        return replace(
            base,
            source="v4l2",
            device=path,
            choice=choice,
            width=choice.width,
            height=choice.height,
            fps=choice.fps,
            reason=f"{node.card} at {path}: {choice.reason}",
            skipped=skipped,
        )

    def _device_path(self, explicit: bool) -> str:
        """The node of our camera now: remembered identity first (it may have been renumbered)."""
        if self._identity is not None:
            preferred = self.plan.device if self.plan is not None and self.plan.device else self.cfg.device
            found = v4l2.find_device(self._identity, self.root, preferred or None)
            if found is None:
                ident = self._identity
                who = f"{ident.vendor_id}:{ident.product_id}" + (
                    f" serial {ident.serial}" if ident.serial else ""
                )
                raise CaptureLostError(f"camera {who} ({preferred}) is not connected; waiting for it")
            if preferred and found != preferred:
                log.info("capture.device_moved from=%s to=%s", preferred, found)
            return found
        if self.cfg.device:
            return self.cfg.device
        picked, skipped = self._scan_v4l2()
        if picked is None:
            detail = "; ".join(f"{d}: {r}" for d, r in skipped) or "no /dev/video* nodes"
            raise CaptureLostError(f"capture.source = v4l2: no usable camera ({detail})")
        return picked[0].path

    def _plan_rpicam(self, base: Plan, *, required: bool) -> Plan:
        command = rpicam_command(self.cfg.rpicam_command)
        if command is None:
            why = f"capture.rpicam_command={self.cfg.rpicam_command!r}: not installed"
            if required:
                raise CaptureError(why)
            return replace(base, reason="no Raspberry Pi camera (rpicam-vid not installed)")
        try:
            listing = subprocess.run(
                [command, "--list-cameras"], capture_output=True, text=True, timeout=15, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CaptureLostError(f"{command} --list-cameras failed: {e}") from e
        cameras = libcamera.parse_list_cameras(listing.stdout + listing.stderr)
        if not cameras or self.cfg.camera >= len(cameras):
            why = f"libcamera lists {len(cameras)} camera(s), capture.camera = {self.cfg.camera}"
            if required:
                raise CaptureLostError(why)
            return replace(base, reason=f"no Raspberry Pi camera ({why})")
        cam = cameras[self.cfg.camera]
        # Pi 4 and older: rpicam-vid drives the hardware H.264 encoder itself, no frames cross the pipe.
        # Elsewhere (Pi 5 has no encoder) raw I420 comes over the pipe and is encoded here.
        mode = "h264" if self.board.get("family") == "rpi" else "yuv420"
        return replace(
            base,
            source="rpicam",
            device=f"{command} camera {self.cfg.camera}",
            rpicam_mode=mode,
            reason=f"libcamera camera {self.cfg.camera} ({cam.sensor}), {mode} over a pipe",
        )

    # -- building tracks (worker thread: opens encoders) ---------------------------------------------

    def _video_encoder(self, width: int, height: int, fps: float) -> VideoEncoder:
        if self.encoder_choice is None:
            self.encoder_choice = hw_encoders.probe_encoders(self.board, prefer=self.cfg.encoder)
            log.info(
                "capture.encoder chosen=%s reason=%s",
                self.encoder_choice.name,
                quote(self.encoder_choice.reason),
            )
            for probe in self.encoder_choice.probes:
                if not probe.available:
                    log.info("capture.encoder_unavailable name=%s reason=%s", probe.name, quote(probe.reason))
        gop = max(1, round(self.cfg.gop_s * fps))
        kwargs: dict[str, Any] = {
            "width": width,
            "height": height,
            "fps": fps,
            "bitrate_bps": self.cfg.bitrate_bps,
            "gop": gop,
            "profile": self.cfg.profile,
        }
        name = self.encoder_choice.name
        try:
            encoder = VideoEncoder(name, **kwargs)
        except Exception as e:  # an FFmpeg error of any kind: the hardware encoder refused this mode
            if name == "libx264":
                raise CaptureError(f"capture.encoder: libx264 did not open at {width}x{height}: {e}") from e
            log.warning("capture.encoder_fallback from=%s to=libx264 error=%s", name, quote(str(e)))
            encoder = VideoEncoder("libx264", **kwargs)
        self._encoder = encoder
        return encoder

    def _audio_encoder(self, channels: int = 1) -> AudioEncoder:
        return AudioEncoder(channels=channels, bitrate_bps=self.cfg.audio_bitrate_bps)

    def _build_tracks(self, plan: Plan) -> Sequence[Track]:
        cfg = self.cfg
        start_ms = self.clock.now_ms() + _LEAD_MS
        tracks: list[Track] = []
        if plan.source == "synthetic":
            tracks.append(
                SyntheticVideo(
                    self._video_encoder(cfg.width, cfg.height, float(cfg.fps)),
                    width=cfg.width,
                    height=cfg.height,
                    fps=cfg.fps,
                    start_ms=start_ms,
                    audio=SyntheticAudio(self._audio_encoder(), start_ms=start_ms) if cfg.audio else None,
                )
            )
            return tracks
        if plan.source == "file":
            assert cfg.file is not None
            tracks.append(
                FileTrack(
                    cfg.file,
                    make_encoder=self._video_encoder,
                    audio=cfg.audio,
                    audio_bitrate_bps=cfg.audio_bitrate_bps,
                    start_ms=start_ms,
                )
            )
            return tracks
        if plan.source == "v4l2":
            assert plan.choice is not None and plan.device is not None
            choice = plan.choice
            encoder: VideoEncoder | None = (
                None if choice.passthrough else self._video_encoder(choice.width, choice.height, choice.fps)
            )
            tracks.append(
                V4l2Video(
                    plan.device,
                    input_format=choice.ffmpeg_input_format,
                    width=choice.width,
                    height=choice.height,
                    fps=choice.fps,
                    encoder=encoder,
                )
            )
        elif plan.source == "rpicam":
            command = rpicam_command(cfg.rpicam_command)
            assert command is not None and plan.rpicam_mode is not None
            yuv = plan.rpicam_mode == "yuv420"
            tracks.append(
                RpicamVideo(
                    command,
                    mode=plan.rpicam_mode,
                    width=cfg.width,
                    height=cfg.height,
                    fps=float(cfg.fps),
                    camera=cfg.camera,
                    encoder=self._video_encoder(cfg.width, cfg.height, float(cfg.fps)) if yuv else None,
                    gop=cfg.gop_frames,
                    bitrate_bps=cfg.bitrate_bps,
                    profile=cfg.profile,
                )
            )
        if cfg.audio_device:
            tracks.append(AlsaAudio(cfg.audio_device, self._audio_encoder()))
        return tracks

    def _metadata(self, plan: Plan) -> dict[str, object]:
        has_audio = (self.cfg.audio and plan.source in ("synthetic", "file")) or bool(self.cfg.audio_device)
        meta: dict[str, object] = {
            "width": plan.width,
            "height": plan.height,
            "framerate": plan.fps,
            "videocodecid": 7,
            "encoder": f"appliance {__version__} capture ({plan.source})",
        }
        if has_audio:
            meta["audiocodecid"] = 10
        return meta
