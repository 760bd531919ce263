"""The recorder's files: writing a segment, finishing one a crash left, listing them, choosing what goes.

Blocking I/O, no trio: `appliance.media.recorder` calls everything here from worker threads. The layout is
`<dir>/<app>/<key>/<YYYYmmdd-HHMMSS>-<seq>.flv`: the UTC start time as the wall clock had it (which may be
wrong, see below), and `seq`, a recorder-wide counter that orders recordings by creation whatever the clock
did. A segment is written as `<name>.flv.part` and renamed when it is closed.

Crash safety. Tags are appended with `os.write` on an unbuffered descriptor (the driver batches them for at
most `FLUSH_S`), so a crash of the process loses at most that batch; `sync()` is called every few seconds,
so a power cut loses at most those. A `.part` left behind is finished by `recover_part` at the next start:
it keeps the whole tags (each checked by `FlvReader`, PreviousTagSize included), truncates the rest and
patches onMetaData as a clean close would.

Retention (`plan_retention`) is the rule the recorder's module docstring explains.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from appliance.media.flv import FlvError, MediaPacket, parse_audio, parse_script, parse_video
from appliance.media.flv_file import (
    TAG_AUDIO,
    TAG_SCRIPT,
    TAG_VIDEO,
    FlvReader,
    FlvTag,
    metadata_offsets,
    patch_metadata,
)
from appliance.media.packets import Kind
from appliance.media.segmenter import METADATA_AT, SegmentStarted, Span

__all__ = [
    "PLAUSIBLE_EPOCH",
    "CloseSegment",
    "Closed",
    "Lost",
    "OpenSegment",
    "Opened",
    "Recording",
    "Recovered",
    "RetentionPlan",
    "SegmentFile",
    "SegmentWriter",
    "WriteOp",
    "WriteOutcome",
    "WriteTags",
    "delete_files",
    "disk_free_bytes",
    "fsync_dir",
    "is_disk_full",
    "list_parts",
    "max_seq",
    "plan_retention",
    "read_duration",
    "recover_part",
    "redate",
    "scan_recordings",
    "segment_name",
]

# A wall clock (or mtime) before 2024-01-01 UTC was never set: no recording of this appliance is older.
PLAUSIBLE_EPOCH = 1_704_067_200.0
# How far the clock may sit behind the newest recording's mtime before it is called suspect (NTP slews and
# the few seconds between a write and a close are not a clock problem).
_BEHIND_SLACK_S = 60.0
_NAME = re.compile(r"^(\d{8}-\d{6})-(\d+)\.flv$")
_PART_SUFFIX = ".part"
_FILE_HEADER_SIZE = 13
_TAG_HEADER_SIZE = 11


@dataclass(frozen=True, slots=True, kw_only=True)
class Recording:
    """A finished recording on disk.

    Attributes:
        path: The `.flv` file.
        stream: Its stream, `app/key` (from its directory).
        seq: The recorder-wide sequence number from its name: higher is newer.
        started_utc: Its start time from its name, ISO 8601 (as the clock had it: may be wrong).
        size_bytes: Its size.
        mtime: Its modification time (when it was closed), as the clock had it.
        duration_s: Its onMetaData duration; None unless asked for (`scan_recordings(durations=True)`).
    """

    path: Path
    stream: str
    seq: int
    started_utc: str
    size_bytes: int
    mtime: float
    duration_s: float | None = None


def segment_name(wall_s: float, seq: int) -> str:
    """The file name of segment `seq` started at wall clock `wall_s`: `YYYYmmdd-HHMMSS-<seq>.flv`."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(max(0.0, wall_s))) + f"-{seq:06d}.flv"


def disk_free_bytes(path: Path) -> int:
    """Bytes available to an unprivileged writer on the file system holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename or a new file in it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentFile:
    """One segment being written: `<path>.part`, renamed to `path` by `finish()`.

    Args:
        path: The final `.flv` path; its directory is created if needed.
        head: The first bytes (`SegmentStarted.head`).
        metadata_body: The onMetaData body at `METADATA_AT`, patched by `finish()`.

    Raises:
        OSError: The file cannot be created or the head written (nothing is left behind then).
    """

    def __init__(self, path: Path, head: bytes, metadata_body: bytes) -> None:
        self.path = path
        self.part = path.with_name(path.name + _PART_SUFFIX)
        self.size = 0
        self._metadata_body = metadata_body
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            self.write(head)
        except OSError:
            os.close(self._fd)
            self.part.unlink(missing_ok=True)
            raise

    def write(self, data: bytes) -> None:
        """Append whole tags. On an error the file is cut back to its size before the call.

        Raises:
            OSError: The write failed (ENOSPC, EIO, ...).
        """
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError:
            # Never leave half a tag: the file stays a valid FLV whatever happens next.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)
                os.lseek(self._fd, self.size, os.SEEK_SET)
            raise
        self.size += len(view)

    def sync(self) -> None:
        """Push the written tags to the disk (bounds what a power cut loses)."""
        os.fdatasync(self._fd)

    def finish(self, duration_s: float) -> int:
        """Patch onMetaData (duration, filesize), fsync, rename `.part` to `.flv`, fsync the directory.

        Returns:
            The file's size.

        Raises:
            OSError: Patching, syncing or renaming failed; the descriptor is closed and the `.part` stays,
                for `recover_part` at the next start.
        """
        try:
            _patch(self._fd, self._metadata_body, duration_s, self.size)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
        os.rename(self.part, self.path)
        fsync_dir(self.path.parent)
        return self.size

    def abandon(self) -> None:
        """Close the descriptor and leave the `.part` for `recover_part`."""
        with contextlib.suppress(OSError):
            os.close(self._fd)


# What a stream task hands its SegmentWriter, in order.
@dataclass(frozen=True, slots=True)
class OpenSegment:
    """Open a segment at `path` (after checking free space) and write `started.head`."""

    path: Path
    started: SegmentStarted


@dataclass(frozen=True, slots=True)
class WriteTags:
    """Append `data`; the segment then lasts `end_ms` (the duration if it must be closed early)."""

    data: bytes
    end_ms: int


@dataclass(frozen=True, slots=True)
class CloseSegment:
    """Finish the open segment, `duration_s` long."""

    duration_s: float
    reason: str


WriteOp = OpenSegment | WriteTags | CloseSegment


# What the SegmentWriter did, in order.
@dataclass(frozen=True, slots=True)
class Opened:
    path: Path


@dataclass(frozen=True, slots=True)
class Closed:
    path: Path
    size: int
    duration_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Lost:
    """A segment that could not be finished: its `.part` stays, for `recover_part`."""

    part: Path
    error: str


@dataclass(slots=True)
class WriteOutcome:
    """What `SegmentWriter.apply` did; `error` set means recording of the stream must stop."""

    steps: list[Opened | Closed | Lost] = field(default_factory=list)
    written: int = 0
    segment_size: int = 0
    error: str | None = None


class _DiskFull(Exception):
    pass


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


class SegmentWriter:
    """A stream's segment files. Not thread-safe: use it from one thread at a time.

    Args:
        root: The recordings directory (its file system is the one checked for free space).
        min_free: Free bytes below which no segment is opened or continued.
        free_bytes: How free space is measured (`disk_free_bytes`).
    """

    def __init__(self, root: Path, min_free: int, free_bytes: Callable[[Path], int]) -> None:
        self._root = root
        self._min_free = min_free
        self._free_bytes = free_bytes
        self._file: SegmentFile | None = None
        self._end_ms = 0

    def apply(self, ops: list[WriteOp], periodic: bool) -> WriteOutcome:
        """Carry out `ops` in order. Never raises OSError: a failure closes what was written and is reported.

        Args:
            ops: The operations.
            periodic: Also fdatasync the open segment and check free space (every few seconds).

        Returns:
            What was done. After an `error`, the remaining ops were skipped and no segment is open.
        """
        out = WriteOutcome()
        try:
            for op in ops:
                if isinstance(op, OpenSegment):
                    self._finish(out, self._end_ms / 1000, "replaced")
                    self._check_free()
                    self._file = SegmentFile(op.path, op.started.head, op.started.metadata_body)
                    self._end_ms = 0
                    out.steps.append(Opened(op.path))
                    out.written += self._file.size
                elif isinstance(op, WriteTags):
                    if self._file is not None:
                        self._file.write(op.data)
                        self._end_ms = op.end_ms
                        out.written += len(op.data)
                else:
                    self._finish(out, op.duration_s, op.reason)
            if periodic and self._file is not None:
                self._file.sync()
                self._check_free()
        except _DiskFull as exc:
            out.error = str(exc)
            self._finish(out, self._end_ms / 1000, "disk_full")
        except OSError as exc:
            if is_disk_full(exc):
                out.error = f"disk full: {exc.strerror}{self._free_note()}"
            else:
                out.error = f"write failed: {exc.strerror or exc}"
            self._finish(out, self._end_ms / 1000, "error")
        out.segment_size = self._file.size if self._file is not None else 0
        return out

    def _check_free(self) -> None:
        free = self._free_bytes(self._root)
        if free < self._min_free:
            raise _DiskFull(f"disk full: {_mb(free)} free, need {_mb(self._min_free)} (record.min_free)")

    def _free_note(self) -> str:
        try:
            return f" ({_mb(self._free_bytes(self._root))} free)"
        except OSError:
            return ""

    def _finish(self, out: WriteOutcome, duration_s: float, reason: str) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        try:
            size = file.finish(duration_s)
        except OSError as exc:
            file.abandon()
            out.steps.append(Lost(file.part, exc.strerror or str(exc)))
            out.error = out.error or f"closing {file.path.name} failed: {exc.strerror or exc}"
            return
        out.steps.append(Closed(file.path, size, duration_s, reason))


def _patch(fd: int, body: bytes, duration_s: float, filesize: int) -> None:
    # patch_metadata checks the values and the body; only the two 8-byte numbers go back to the disk.
    patched = patch_metadata(body, duration_s=duration_s, filesize=filesize)
    for offset in metadata_offsets(patched).values():
        os.pwrite(fd, patched[offset : offset + 8], METADATA_AT + offset)


@dataclass(frozen=True, slots=True)
class Recovered:
    """What `recover_part` made of a `.part`: the finished file, or None if nothing was worth keeping."""

    path: Path | None
    duration_s: float
    size_bytes: int
    dropped_bytes: int


def recover_part(part: Path) -> Recovered:
    """Finish a `.part` a crash left: keep its whole tags, patch onMetaData, rename it to `.flv`.

    A file without one complete media tag is deleted.

    Args:
        part: The `<name>.flv.part` file.

    Returns:
        The outcome.

    Raises:
        OSError: Reading, truncating or renaming failed.
    """
    final = part.with_name(part.name.removesuffix(_PART_SUFFIX))
    span = Span()
    metadata: bytes | None = None
    with open(part, "r+b") as f:
        total = os.fstat(f.fileno()).st_size
        end = _scan_tags(f, span)
        if span.media_tags:
            f.seek(_FILE_HEADER_SIZE)
            first = f.read(_TAG_HEADER_SIZE)
            if len(first) == _TAG_HEADER_SIZE and first[0] == TAG_SCRIPT:
                metadata = f.read(int.from_bytes(first[1:4], "big"))
            f.truncate(end)
            if metadata is not None:
                # Not onMetaData with numeric duration and filesize: keep the media, unpatched.
                with contextlib.suppress(FlvError, ValueError):
                    _patch(f.fileno(), metadata, span.duration_s, end)
            f.flush()
            os.fsync(f.fileno())
    if not span.media_tags:
        part.unlink()
        return Recovered(None, 0.0, 0, total)
    os.rename(part, final)
    fsync_dir(final.parent)
    return Recovered(final, span.duration_s, end, total - end)


def _scan_tags(f: BinaryIO, span: Span) -> int:
    """Feed whole tags one at a time to an FlvReader; return the offset after the last good one (0: none)."""
    header = f.read(_FILE_HEADER_SIZE)
    reader = FlvReader()
    try:
        if len(header) < _FILE_HEADER_SIZE or reader.feed(header) or header[5:9] != b"\x00\x00\x00\x09":
            return 0
    except FlvError:
        return 0
    end = _FILE_HEADER_SIZE
    while True:
        head = f.read(_TAG_HEADER_SIZE)
        if len(head) < _TAG_HEADER_SIZE:
            return end
        size = int.from_bytes(head[1:4], "big")
        if size > reader.max_tag_size:
            return end  # garbage: do not read megabytes of it
        rest = f.read(size + 4)
        if len(rest) < size + 4:
            return end
        bad = reader.bad_previous_sizes
        try:
            tags = reader.feed(head + rest)
        except FlvError:
            return end  # garbage after the last tag: a zero-filled block after a power cut, say
        if len(tags) != 1 or reader.bad_previous_sizes != bad:
            return end
        span.add(_tag_kind(tags[0]), tags[0].ts_ms)
        end += _TAG_HEADER_SIZE + size + 4


def _tag_kind(t: FlvTag) -> Kind:
    """The kind a tag counts as in a Span: sequence headers are not frames and count as DATA."""
    parse = {TAG_VIDEO: parse_video, TAG_AUDIO: parse_audio}.get(t.tag_type)
    if parse is None:
        return Kind.DATA
    try:
        parsed = parse(t.body, t.ts_ms)
    except (FlvError, ValueError):
        return Kind.DATA
    return parsed.packet.kind if isinstance(parsed, MediaPacket) else Kind.DATA


def read_duration(path: Path) -> float | None:
    """The onMetaData duration of a recording, or None if its first tag does not hold one."""
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
    except OSError:
        return None
    reader = FlvReader()
    try:
        tags = reader.feed(head)
    except FlvError:
        return None
    if not tags or tags[0].tag_type != TAG_SCRIPT:
        return None
    try:
        name, args = parse_script(tags[0].body)
    except FlvError:
        return None
    if name != "onMetaData" or not args or not isinstance(args[0], Mapping):
        return None
    value = args[0].get("duration")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _stream_dirs(root: Path) -> Iterable[tuple[str, Path]]:
    try:
        apps = sorted(p for p in root.iterdir() if p.is_dir())
    except FileNotFoundError:
        return
    for app in apps:
        for key in sorted(p for p in app.iterdir() if p.is_dir()):
            yield f"{app.name}/{key.name}", key


def scan_recordings(root: Path, *, durations: bool = False) -> list[Recording]:
    """List the finished recordings under `root`, oldest (lowest seq) first.

    Args:
        root: The recordings directory.
        durations: Also read each file's onMetaData duration (one small read per file).

    Returns:
        The recordings. Files that vanish meanwhile are skipped.
    """
    out: list[Recording] = []
    for stream, directory in _stream_dirs(root):
        for entry in os.scandir(directory):
            m = _NAME.match(entry.name)
            if m is None or not entry.is_file():
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            stamp = m.group(1)
            started = f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}Z"
            path = Path(entry.path)
            out.append(
                Recording(
                    path=path,
                    stream=stream,
                    seq=int(m.group(2)),
                    started_utc=started,
                    size_bytes=st.st_size,
                    mtime=st.st_mtime,
                    duration_s=read_duration(path) if durations else None,
                )
            )
    out.sort(key=lambda r: r.seq)
    return out


def list_parts(root: Path) -> list[Path]:
    """The `.flv.part` files under `root` (segments a crash left open)."""
    return [
        Path(e.path)
        for _, directory in _stream_dirs(root)
        for e in os.scandir(directory)
        if e.name.endswith(".flv" + _PART_SUFFIX) and _NAME.match(e.name.removesuffix(_PART_SUFFIX))
    ]


def max_seq(root: Path) -> int:
    """The highest sequence number of any recording or `.part` under `root` (0 when there is none)."""
    best = 0
    for _, directory in _stream_dirs(root):
        for e in os.scandir(directory):
            m = _NAME.match(e.name.removesuffix(_PART_SUFFIX))
            if m is not None:
                best = max(best, int(m.group(2)))
    return best


def redate(paths: dict[Path, float], now_offset: float) -> dict[Path, float]:
    """Move the mtimes of files closed before a clock step onto the stepped clock's timeline.

    Args:
        paths: Each file and the wall-minus-monotonic clock offset when it was closed.
        now_offset: The offset now.

    Returns:
        The files re-dated (and still there), each with `now_offset`.
    """
    done: dict[Path, float] = {}
    for path, offset in paths.items():
        try:
            st = os.stat(path)
            os.utime(path, (st.st_atime, st.st_mtime + now_offset - offset))
        except FileNotFoundError:
            continue
        done[path] = now_offset
    return done


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPlan:
    """What a retention pass deletes, and why not by age if the clock looked wrong.

    Attributes:
        deletions: (recording, "max_bytes" or "max_age"), oldest first.
        clock_suspect: Why age-based deletion was skipped, or None.
    """

    deletions: list[tuple[Recording, str]]
    clock_suspect: str | None


def plan_retention(
    recordings: list[Recording], *, open_bytes: int, max_bytes: int, max_age_s: float, now: float
) -> RetentionPlan:
    """Choose the recordings to delete; see the recorder's module docstring for the rule.

    Args:
        recordings: The finished recordings.
        open_bytes: Bytes in segments being written (they count towards `max_bytes` but are never deleted).
        max_bytes: The budget for all recordings.
        max_age_s: The age past which a recording goes.
        now: The wall clock.

    Returns:
        The plan.
    """
    ordered = sorted(recordings, key=lambda r: r.seq)
    doomed: dict[Path, str] = {}
    total = open_bytes + sum(r.size_bytes for r in ordered)
    for r in ordered:
        if total <= max_bytes:
            break
        doomed[r.path] = "max_bytes"
        total -= r.size_bytes
    suspect: str | None = None
    newest_mtime = max((r.mtime for r in ordered), default=None)
    if now < PLAUSIBLE_EPOCH:
        suspect = f"wall clock {_utc(now)} is before {_utc(PLAUSIBLE_EPOCH)}: not set yet"
    elif newest_mtime is not None and now < newest_mtime - _BEHIND_SLACK_S:
        suspect = f"wall clock {_utc(now)} is behind the newest recording ({_utc(newest_mtime)})"
    if suspect is None:
        newest = {r.stream: r.seq for r in ordered}  # ordered by seq: the last one per stream wins
        effective = float("-inf")
        for r in ordered:
            # Recordings are made in seq order, so none is older than one before it: an mtime earlier than
            # an older file's is a clock that was behind, and the older file's mtime is the better bound.
            effective = max(effective, r.mtime)
            if r.path in doomed or newest[r.stream] == r.seq or effective < PLAUSIBLE_EPOCH:
                continue
            if now - effective > max_age_s:
                doomed[r.path] = "max_age"
    return RetentionPlan(
        deletions=[(r, doomed[r.path]) for r in ordered if r.path in doomed], clock_suspect=suspect
    )


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(0.0, t)))


def delete_files(paths: Iterable[Path], unlink: Callable[[Path], None] = os.unlink) -> list[Path]:
    """Delete `paths`; return those that went (a file already gone is not an error)."""
    gone = []
    for path in paths:
        try:
            unlink(path)
        except FileNotFoundError:
            continue
        gone.append(path)
    return gone


def is_disk_full(exc: OSError) -> bool:
    """Whether an OSError means the file system is full (or the user's quota is)."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
