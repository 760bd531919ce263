"""Recording: streams to FLV segment files on the appliance's disk, with retention. A trio driver.

Theory of operation
-------------------
`Recorder.run` is the root child `recorder`. It records every live Bus whose name matches `record.streams`
(`"app/key"`, `"app/*"`, `"*"`) and every stream `start()` asked for, except those `stop()` turned off
(until `start()`, or until the child restarts). The BusRegistry has no callbacks, so a watcher looks at its
live Buses every `POLL_S` (and at once after `start()`). Each recorded stream gets one task and one Bus
subscription with a large queue and a long `max_lag_ms`: the recorder is an ordinary subscriber, so the
relay never waits for it; if the disk is slower than the stream the Bus drops to the next keyframe for the
recorder alone, and cuts it off past `MAX_LAG_MS` (the segment is closed, and the watcher subscribes again).
The task ends when the producer leaves and the Bus is no longer live; the watcher starts a new one when a
producer comes back.

The files are `appliance.media.segmenter`'s business (what a segment holds, where it is cut, its duration)
and `appliance.media.recording_files`' (writing, `.part` and rename, recovery, listing). Every file
operation runs in a worker thread with one `CapacityLimiter(1)` per stream, batched: the tags of
`FLUSH_S` or `BATCH_BYTES` go down in one thread hop, so a crash loses at most that batch (and a power cut
at most `SYNC_S`, the fdatasync period). A thread stuck in a write never blocks the trio loop: the stream's
task waits (and the Bus drops for it) while everything else runs; at shutdown the close is bounded by
`CLOSE_TIMEOUT_S`, after which the `.part` is left to recovery. At start, `.part` files a crash left are
finished (`record.recovered`) before anything else touches them.

Disk full. Before a segment is opened, and every `SYNC_S` while one is written, free space is checked
against `record.min_free`. Below it, or on ENOSPC, the stream's segment is closed properly (truncated to its
last whole batch, onMetaData patched, renamed), recording of that stream stops with the reason in
`status()` and a `record.stopped` line, and it is tried again every `RETRY_S` at the next sync point.

Retention runs every `RETENTION_S` and after each segment closes, over the finished recordings of every
stream (open segments count towards the size budget but are never deleted):

- `record.max_bytes`: while the total is above it, the oldest recording goes (`reason=max_bytes`).
  "Oldest" is the lowest sequence number (a recorder-wide counter in each file name), never a time: this
  rule does not depend on the clock at all.
- `record.max_age`: a recording goes when now - its effective mtime exceeds it (`reason=max_age`). A
  Raspberry Pi has no real-time clock: it boots with a stale clock (or 1970) and NTP steps it later, maybe
  by years. So: (1) a recording's effective mtime is the latest mtime of it and every older (lower-seq)
  one, since none is older than its predecessors; (2) an effective mtime before 2024 (`PLAUSIBLE_EPOCH`)
  means the clock was never set: that recording's age is unknown and it is kept; (3) the pass deletes
  nothing by age (`record.clock_suspect`, also in `status()`) while the clock reads before 2024 or more than
  a minute before the newest recording's mtime; (4) when the recorder sees the clock step (wall clock minus
  trio's monotonic clock moves by over `CLOCK_STEP_S`), it moves the mtimes of the files it closed before
  the step by the step (`record.clock_step`), so recordings made before NTP synced get their true times
  instead of looking years old; (5) the newest recording of each stream is never deleted by age. Size
  retention still bounds the disk whatever the clock does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from appliance.bus import Bus, BusRegistry
from appliance.config import RecordConfig
from appliance.log import quote
from appliance.media.bus_events import (
    BusError,
    PacketsDropped,
    ProducerLeft,
    SubscriberCutOffError,
    validate_bus_name,
)
from appliance.media.recording_files import (
    Closed,
    CloseSegment,
    Opened,
    OpenSegment,
    Recording,
    RetentionPlan,
    SegmentWriter,
    WriteOp,
    WriteOutcome,
    WriteTags,
    delete_files,
    disk_free_bytes,
    list_parts,
    max_seq,
    plan_retention,
    recover_part,
    redate,
    scan_recordings,
    segment_name,
)
from appliance.media.segmenter import SegmentEnded, Segmenter, SegmentEvent, SegmentStarted, TagsReady
from appliance.media.subscription import Subscription

__all__ = [
    "BATCH_BYTES",
    "CLOCK_STEP_S",
    "CLOSE_TIMEOUT_S",
    "FLUSH_S",
    "MAX_LAG_MS",
    "POLL_S",
    "QUEUE",
    "RETENTION_S",
    "RETRY_S",
    "SYNC_S",
    "Recorder",
    "RecorderError",
    "RecorderStatus",
    "Recording",
    "StreamStatus",
]

log = logging.getLogger("appliance.record")

POLL_S = 0.5
FLUSH_S = 0.1
BATCH_BYTES = 256 * 1024
SYNC_S = 5.0
RETRY_S = 30.0
RETENTION_S = 30.0
CLOSE_TIMEOUT_S = 5.0
CLOCK_STEP_S = 60.0
QUEUE = 2048
MAX_LAG_MS = 30_000
_MAX_STREAMS = 1_000  # streams kept in status() (idle ones beyond this are forgotten, oldest first)
_MAX_TRACKED = 100_000  # files closed by this process whose mtimes follow clock steps


class RecorderError(Exception):
    """The recordings directory cannot be used."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStatus:
    """One stream's recording state.

    Attributes:
        stream: `app/key`.
        wanted: Recording is on for it (by `record.streams` or `start()`).
        recording: A segment is open.
        segment: The open segment's final path (it is written as `<segment>.part`), or None.
        segment_bytes: Bytes in the open segment.
        bytes_written: Bytes written for this stream since the recorder started.
        segments_written: Segments closed since the recorder started.
        packets_dropped: Packets the Bus dropped because the recorder fell behind.
        error: Why recording is stopped (disk full, write error), or None.
    """

    stream: str
    wanted: bool
    recording: bool
    segment: Path | None
    segment_bytes: int
    bytes_written: int
    segments_written: int
    packets_dropped: int
    error: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecorderStatus:
    """The recorder's state.

    Attributes:
        dir: The recordings directory.
        clock_suspect: Why the last retention pass distrusted the wall clock (and deleted nothing by age).
        retention_passes: Retention passes completed since the recorder started.
        streams: Each stream's state.
    """

    dir: Path
    clock_suspect: str | None
    retention_passes: int
    streams: tuple[StreamStatus, ...]


@dataclass(slots=True)
class _Stream:
    name: str
    scope: trio.CancelScope | None = None
    segment: Path | None = None
    segment_bytes: int = 0
    bytes_written: int = 0
    segments_written: int = 0
    dropped: int = 0
    error: str | None = None


class _StreamTask:
    """Records one Bus until its producer leaves, the subscription ends, or the task is cancelled."""

    def __init__(self, recorder: Recorder, bus: Bus, state: _Stream) -> None:
        self._rec = recorder
        self._bus = bus
        self._state = state
        self._core = Segmenter(segment_ms=max(1, round(recorder.cfg.segment_s * 1000)))
        self._writer = SegmentWriter(recorder.root, recorder.cfg.min_free_bytes, recorder.free_bytes)
        self._limiter = trio.CapacityLimiter(1)
        self._ops: list[WriteOp] = []
        self._tags: list[bytes] = []
        self._tags_bytes = 0
        self._end_ms = 0
        self._flush_at = math.inf
        self._sync_at = 0.0
        self._retry_at = math.inf

    async def run(self) -> None:
        name = self._state.name
        try:
            sub = self._bus.subscribe(max_queue=QUEUE, max_lag_ms=MAX_LAG_MS, name="record")
        except BusError:
            return  # the Bus closed or was replaced: the watcher finds the new one
        log.info("record.subscribed stream=%s", name)
        try:
            with sub:
                await self._pump(sub)
        except SubscriberCutOffError as exc:
            log.warning("record.cut_off stream=%s lag_ms=%d", name, exc.lag_ms)
        finally:
            self._take(self._core.end("stopped"))
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
                await self._flush()
            if scope.cancelled_caught:
                log.error("record.close_timeout stream=%s timeout_s=%g", name, CLOSE_TIMEOUT_S)
            self._state.segment = None
            self._state.segment_bytes = 0

    async def _pump(self, sub: Subscription) -> None:
        while True:
            if trio.current_time() >= self._retry_at:
                self._retry_at = math.inf
                self._core.resume()
                log.info("record.retrying stream=%s", self._state.name)
            leaving = False
            with trio.move_on_at(min(self._flush_at, self._retry_at)):
                try:
                    event = await sub.receive()
                except trio.EndOfChannel:
                    return  # the Bus was closed
                self._take(self._core.receive(event))
                self._state.dropped = self._core.dropped
                if isinstance(event, PacketsDropped):
                    log.warning("record.dropped stream=%s packets=%d", self._state.name, event.count)
                # Evicted producers are followed by the next one's ProducerJoined: only stop if none is live.
                leaving = isinstance(event, ProducerLeft) and not self._bus.live
            if leaving or self._tags_bytes >= BATCH_BYTES or trio.current_time() >= self._flush_at:
                await self._flush()
            # Checked again after the flush: a publisher that came back meanwhile is already in our queue.
            if leaving and not self._bus.live:
                return

    def _take(self, events: list[SegmentEvent]) -> None:
        for event in events:
            if isinstance(event, TagsReady):
                self._tags.append(event.data)
                self._tags_bytes += len(event.data)
                self._end_ms = event.end_ms
            else:
                self._seal()
                if isinstance(event, SegmentStarted):
                    self._ops.append(OpenSegment(self._rec._new_path(self._state.name), event))
                elif isinstance(event, SegmentEnded):
                    self._ops.append(CloseSegment(event.duration_s, event.reason))
        if (self._ops or self._tags) and self._flush_at == math.inf:
            self._flush_at = trio.current_time() + FLUSH_S

    def _seal(self) -> None:
        if self._tags:
            self._ops.append(WriteTags(b"".join(self._tags), self._end_ms))
            self._tags.clear()
            self._tags_bytes = 0

    async def _flush(self) -> None:
        self._seal()
        self._flush_at = math.inf
        if not self._ops:
            return
        ops, self._ops = self._ops, []
        now = trio.current_time()
        periodic = now >= self._sync_at
        if periodic:
            self._sync_at = now + SYNC_S
        offset = self._rec._clock_offset()  # taken before the files are closed, should the clock step now
        out = await trio.to_thread.run_sync(
            self._writer.apply, ops, periodic, limiter=self._limiter, abandon_on_cancel=True
        )
        self._report(out, offset)

    def _report(self, out: WriteOutcome, offset: float) -> None:
        state = self._state
        for step in out.steps:
            if isinstance(step, Opened):
                state.segment = step.path
                state.error = None
                log.info("record.segment_open stream=%s path=%s", state.name, quote(step.path))
            elif isinstance(step, Closed):
                state.segment = None
                state.segments_written += 1
                log.info(
                    "record.segment_closed stream=%s path=%s duration_s=%.3f bytes=%d reason=%s",
                    state.name,
                    quote(step.path),
                    step.duration_s,
                    step.size,
                    step.reason,
                )
                self._rec._segment_closed(step.path, offset)
            else:
                state.segment = None
                log.error(
                    "record.close_failed stream=%s path=%s error=%s",
                    state.name,
                    quote(step.part),
                    quote(step.error),
                )
        state.bytes_written += out.written
        state.segment_bytes = out.segment_size
        if out.error is not None:
            # The writer closed what it had; forget the segment and wait for the retry.
            self._core.pause()
            self._ops.clear()
            self._tags.clear()
            self._tags_bytes = 0
            self._retry_at = trio.current_time() + RETRY_S
            level = logging.DEBUG if out.error == state.error else logging.WARNING
            state.error = out.error
            log.log(
                level, "record.stopped stream=%s reason=%s retry_s=%g", state.name, quote(out.error), RETRY_S
            )


class Recorder:
    """Records streams to FLV segments under `record.dir`; see the module docstring.

    Args:
        cfg: The `[record]` section.
        state_dir: The appliance's state directory (recordings default to `<state_dir>/recordings`).
        buses: The process's Buses.
        wall_clock: The wall clock (time.time); injectable because it is the one thing retention distrusts.
        free_bytes: Free bytes on the file system holding a path (os.statvfs); injectable for tests.
    """

    def __init__(
        self,
        cfg: RecordConfig,
        state_dir: Path,
        buses: BusRegistry,
        *,
        wall_clock: Callable[[], float] = time.time,
        free_bytes: Callable[[Path], int] = disk_free_bytes,
    ) -> None:
        self.cfg = cfg
        self.root = cfg.path(state_dir)
        self.free_bytes = free_bytes
        self._buses = buses
        self._wall = wall_clock
        self._streams: dict[str, _Stream] = {}
        self._manual: set[str] = set()
        self._disabled: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._poke = trio.Event()
        self._retention_poke = trio.Event()
        self._seq = 0
        self._closed_here: dict[Path, float] = {}  # file -> wall-minus-monotonic offset when it was closed
        self._offset: float | None = None
        self._clock_suspect: str | None = None
        self._passes = 0

    # -- the API (web, tests) ------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Record stream `name` from now on (when it is live), whatever `record.streams` says.

        Args:
            name: `app/key`.

        Raises:
            ValueError: The name is malformed.
        """
        validate_bus_name(name)
        self._disabled.discard(name)
        self._manual.add(name)
        self._poke.set()

    def stop(self, name: str) -> None:
        """Stop recording stream `name` (its open segment is closed) until `start(name)` or a restart.

        Args:
            name: `app/key`.

        Raises:
            ValueError: The name is malformed.
        """
        validate_bus_name(name)
        self._manual.discard(name)
        self._disabled.add(name)
        state = self._streams.get(name)
        if state is not None and state.scope is not None:
            state.scope.cancel()

    def status(self) -> RecorderStatus:
        """Return every known stream's recording state.

        Returns:
            The status; streams are those recorded since the recorder started, or asked for by `start()`.
        """
        streams = []
        for name in sorted(set(self._streams) | self._manual):
            st = self._streams.get(name) or _Stream(name)
            streams.append(
                StreamStatus(
                    stream=name,
                    wanted=self._wanted(name),
                    recording=st.segment is not None,
                    segment=st.segment,
                    segment_bytes=st.segment_bytes,
                    bytes_written=st.bytes_written,
                    segments_written=st.segments_written,
                    packets_dropped=st.dropped,
                    error=st.error,
                )
            )
        return RecorderStatus(
            dir=self.root,
            clock_suspect=self._clock_suspect,
            retention_passes=self._passes,
            streams=tuple(streams),
        )

    async def recordings(self) -> list[Recording]:
        """List the finished recordings, oldest first, with their onMetaData durations.

        Returns:
            The recordings (path, stream, seq, start time, size, mtime, duration).
        """
        return await trio.to_thread.run_sync(partial(scan_recordings, self.root, durations=True))

    # -- the child -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled: finish leftover `.part` files, watch the Buses, record, apply retention.

        Raises:
            RecorderError: The recordings directory cannot be created or read.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # Ready at once: the directory is checked in a thread, and a failure there ends the child (the
            # supervisor retries it) without holding up the children started after it.
            task_status.started()
            try:
                parts = await trio.to_thread.run_sync(self._prepare)
            except OSError as exc:
                raise RecorderError(f"record.dir={str(self.root)!r}: {exc.strerror or exc}") from exc
            nursery.start_soon(self._maintain, parts)
            nursery.start_soon(self._watch)
            log.info(
                "record.ready dir=%s streams=%s segment_s=%g",
                quote(self.root),
                quote(",".join(self.cfg.streams) or "none"),
                self.cfg.segment_s,
            )

    def _prepare(self) -> list[Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        self._seq = max_seq(self.root)
        return list_parts(self.root)  # listed before any segment is opened: these are all a crash's

    def _wanted(self, name: str) -> bool:
        if name in self._disabled:
            return False
        if name in self._manual:
            return True
        app = name.partition("/")[0]
        return any(p in ("*", name, f"{app}/*") for p in self.cfg.streams)

    async def _watch(self) -> None:
        while True:
            self._poke = trio.Event()
            for bus in self._buses:
                if bus.live and self._wanted(bus.name):
                    state = self._streams.setdefault(bus.name, _Stream(bus.name))
                    if state.scope is None:
                        self._spawn(bus, state)
            self._prune()
            with trio.move_on_after(POLL_S):
                await self._poke.wait()

    def _prune(self) -> None:
        # Random stream keys under a "*" pattern must not grow the status table forever: forget the oldest
        # idle streams (their files stay; only the counters since start go).
        idle = [n for n, st in self._streams.items() if st.scope is None and n not in self._manual]
        for name in idle[: max(0, len(self._streams) - _MAX_STREAMS)]:
            del self._streams[name]

    def _spawn(self, bus: Bus, state: _Stream) -> None:
        assert self._nursery is not None
        scope = trio.CancelScope()
        state.scope = scope

        async def record() -> None:
            try:
                with scope:
                    await _StreamTask(self, bus, state).run()
            finally:
                if state.scope is scope:
                    state.scope = None

        self._nursery.start_soon(record)

    def _new_path(self, name: str) -> Path:
        self._seq += 1
        app, _, key = name.partition("/")
        return self.root / app / key / segment_name(self._wall(), self._seq)

    def _clock_offset(self) -> float:
        return self._wall() - trio.current_time()

    def _segment_closed(self, path: Path, clock_offset: float) -> None:
        self._closed_here[path] = clock_offset
        if len(self._closed_here) > _MAX_TRACKED:
            del self._closed_here[next(iter(self._closed_here))]
        self._retention_poke.set()

    # -- recovery and retention ----------------------------------------------------------------

    async def _maintain(self, parts: list[Path]) -> None:
        for part in parts:
            try:
                done = await trio.to_thread.run_sync(recover_part, part)
            except OSError as exc:
                log.error("record.recover_failed path=%s error=%s", quote(part), quote(exc.strerror or exc))
                continue
            if done.path is None:
                log.warning("record.discarded path=%s reason=%s", quote(part), quote("no complete media tag"))
            else:
                log.info(
                    "record.recovered path=%s duration_s=%.3f bytes=%d dropped_bytes=%d",
                    quote(done.path),
                    done.duration_s,
                    done.size_bytes,
                    done.dropped_bytes,
                )
        while True:
            self._retention_poke = trio.Event()
            try:
                await self._retention_pass()
            except OSError as exc:
                log.error("record.retention_failed error=%s", quote(exc.strerror or exc))
            with trio.move_on_after(RETENTION_S):
                await self._retention_poke.wait()

    async def _retention_pass(self) -> None:
        await self._check_clock()
        open_bytes = sum(st.segment_bytes for st in self._streams.values() if st.segment is not None)
        now = self._wall()
        plan, gone = await trio.to_thread.run_sync(self._retain, open_bytes, now)
        for recording, reason in plan.deletions:
            if recording.path in gone:
                self._closed_here.pop(recording.path, None)
                log.info(
                    "record.deleted path=%s reason=%s bytes=%d",
                    quote(recording.path),
                    reason,
                    recording.size_bytes,
                )
        if plan.clock_suspect != self._clock_suspect:
            if plan.clock_suspect is not None:
                log.warning("record.clock_suspect reason=%s max_age=skipped", quote(plan.clock_suspect))
            else:
                log.info("record.clock_ok")
            self._clock_suspect = plan.clock_suspect
        self._passes += 1

    def _retain(self, open_bytes: int, now: float) -> tuple[RetentionPlan, set[Path]]:
        plan = plan_retention(
            scan_recordings(self.root),
            open_bytes=open_bytes,
            max_bytes=self.cfg.max_bytes,
            max_age_s=self.cfg.max_age_s,
            now=now,
        )
        return plan, set(delete_files(r.path for r, _ in plan.deletions))

    async def _check_clock(self) -> None:
        offset = self._clock_offset()
        if self._offset is not None and abs(offset - self._offset) > CLOCK_STEP_S:
            log.warning("record.clock_step delta_s=%.0f", offset - self._offset)
        self._offset = offset
        stale = {p: o for p, o in self._closed_here.items() if abs(offset - o) > CLOCK_STEP_S}
        if not stale:
            return
        done = await trio.to_thread.run_sync(redate, stale, offset)
        for path in stale:
            self._closed_here.pop(path, None)
        self._closed_here.update(done)
        log.info("record.redated files=%d", len(done))
