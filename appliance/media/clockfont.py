"""A tiny bitmap font drawn straight into the luma plane of a frame, and a reader for it.

The synthetic camera stamps the wall-clock time into every frame; the PyAV wheel's FFmpeg has no drawtext
filter, so this draws the digits itself. Tests and monitoring read the stamp back from decoded frames.

Layout: glyphs are 5x7 cells, each cell `scale` x `scale` pixels. A character advances 6 cells (the glyph
and one blank column). The text sits in a black box with a one-cell margin all round, so a text of n
characters covers ``(6n + 1) * scale`` x ``9 * scale`` pixels from (x, y) -- the blank column after the last
glyph is the right margin. Ink is luma 235 on 16: white on black in limited-range ("video levels") Y'CbCr,
ITU-R BT.601/BT.709. Only the Y plane is touched, so over a coloured picture the box and the digits take
its tint (a dark red box with pink digits over red); the reader looks at luma only, where that is invisible.

Cost: a glyph's rows are built once per (character, scale) and cached; drawing joins 7 rows of cached
bytes and writes ``9 * scale`` whole rows with slice assignment.

Reading samples the middle of every cell (the central ``scale // 2`` square, averaged), thresholds at
mid-grey, and takes the glyph nearest in Hamming distance: glyphs differ in at least 4 cells, so a cell
per glyph spoilt by H.264 does not matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

__all__ = [
    "CHARSET",
    "GLYPH_H",
    "GLYPH_W",
    "INK",
    "PAPER",
    "draw_text",
    "glyph_distances",
    "read_text",
    "render_rows",
    "text_size",
]

GLYPH_W, GLYPH_H = 5, 7
_ADVANCE = GLYPH_W + 1  # cells per character: the glyph and a blank column
_MARGIN = 1  # cells of box around the text
INK, PAPER = 235, 16  # limited-range white and black (BT.601/BT.709 video levels)
_THRESHOLD = (INK + PAPER) // 2 + 1  # 126: at or above is ink

# 5x7 glyphs, '#' = ink. Digits and the punctuation of "YYYY-MM-DD HH:MM:SS.mmm", plus a few for
# ISO 8601 ("T", "Z", "+") and dates or ratios ("/").
_FONT_ART: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    "+": (".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."),
    "/": ("....#", "....#", "...#.", "..#..", ".#...", "#....", "#...."),
    " ": (".....", ".....", ".....", ".....", ".....", ".....", "....."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
}
CHARSET = "".join(_FONT_ART)

# Each glyph as 35 bits, row-major, for the reader.
_BITS: dict[str, int] = {
    ch: int("".join("1" if c == "#" else "0" for row in art for c in row), 2) for ch, art in _FONT_ART.items()
}


def text_size(length: int, scale: int) -> tuple[int, int]:
    """The box a text of `length` characters covers, margin included.

    Args:
        length: Characters (>= 0).
        scale: Pixels per font cell (>= 1).

    Returns:
        (width, height) in pixels.

    Raises:
        ValueError: A negative length or a scale below 1.
    """
    _check_scale(scale)
    if length < 0:
        raise ValueError(f"length={length}: want >= 0")
    # The blank column after the last glyph is the right margin.
    return (_MARGIN + _ADVANCE * length + _MARGIN - 1) * scale, (GLYPH_H + 2 * _MARGIN) * scale


def render_rows(text: str, scale: int) -> list[bytes]:
    """The luma rows of `text` in its box: 235 ink on 16, a one-cell margin round it.

    Args:
        text: Characters from `CHARSET`.
        scale: Pixels per font cell (>= 1).

    Returns:
        ``9 * scale`` rows of ``text_size(len(text), scale)[0]`` bytes each. Rows that are equal are the same
        object (callers must not mutate them; they are bytes).

    Raises:
        ValueError: A character not in `CHARSET`, or a scale below 1.
    """
    _check_scale(scale)
    glyphs = [_glyph_rows(ch, scale) for ch in text]
    width = text_size(len(text), scale)[0]
    blank = _blank_row(width)
    left = bytes((PAPER,)) * (_MARGIN * scale)
    rows: list[bytes] = [blank] * (_MARGIN * scale)
    for r in range(GLYPH_H):
        line = left + b"".join(g[r] for g in glyphs)
        rows.extend([line] * scale)
    rows.extend([blank] * (_MARGIN * scale))
    return rows


def draw_text(plane: memoryview | bytearray, linesize: int, x: int, y: int, text: str, scale: int) -> None:
    """Write `text` in its box into an 8-bit plane (a frame's Y plane) with its top-left corner at (x, y).

    Args:
        plane: The writable plane, e.g. ``memoryview(frame.planes[0])`` of a yuv420p PyAV frame.
        linesize: Bytes from one row of the plane to the next (``frame.planes[0].line_size``).
        x, y: The box's top-left pixel.
        text: Characters from `CHARSET`.
        scale: Pixels per font cell (>= 1).

    Raises:
        ValueError: The box does not fit in the plane (it is never clipped), a character is not in
            `CHARSET`, or a scale below 1. Nothing is written then.
    """
    rows = render_rows(text, scale)
    _check_bounds(len(plane), linesize, x, y, len(rows[0]), len(rows))
    width = len(rows[0])
    start = y * linesize + x
    for row in rows:
        plane[start : start + width] = row
        start += linesize


def read_text(
    plane_bytes: bytes | bytearray | memoryview, linesize: int, x: int, y: int, length: int, scale: int
) -> str:
    """Read back `length` characters that `draw_text` drew at (x, y), from a possibly lossy copy.

    Args:
        plane_bytes: The plane, e.g. ``bytes(frame.planes[0])`` of a decoded frame.
        linesize: Bytes from one row to the next.
        x, y: The box's top-left pixel, as given to `draw_text`.
        length: How many characters to read.
        scale: The scale it was drawn at.

    Returns:
        For each position, the glyph nearest to what the cells show (a space if nothing was drawn).

    Raises:
        ValueError: The box does not fit in the plane, or a scale below 1.
    """
    width, height = text_size(length, scale)
    _check_bounds(len(plane_bytes), linesize, x, y, width, height)
    data = memoryview(plane_bytes)
    half = max(1, scale // 2)
    inset = (scale - half) // 2  # from a cell's corner to its central square
    area = half * half
    out: list[str] = []
    for i in range(length):
        bits = 0
        col0 = x + (_MARGIN + _ADVANCE * i) * scale + inset
        for r in range(GLYPH_H):
            top = (y + (_MARGIN + r) * scale + inset) * linesize
            for c in range(GLYPH_W):
                left = top + col0 + c * scale
                total = 0
                for k in range(half):
                    total += sum(data[left + k * linesize : left + k * linesize + half])
                bits = (bits << 1) | (total >= _THRESHOLD * area)
        out.append(_nearest(bits))
    return "".join(out)


# -- internals --------------------------------------------------------------------------------------


def _check_scale(scale: int) -> None:
    if scale < 1:
        raise ValueError(f"scale={scale}: want >= 1")


def _check_bounds(size: int, linesize: int, x: int, y: int, width: int, height: int) -> None:
    if linesize < 1:
        raise ValueError(f"linesize={linesize}: want >= 1")
    rows = size // linesize
    if x < 0 or y < 0 or x + width > linesize or y + height > rows:
        raise ValueError(
            f"text box {width}x{height} at ({x},{y}) does not fit a plane of {rows} rows of {linesize} bytes"
        )


@lru_cache(maxsize=256)
def _glyph_rows(ch: str, scale: int) -> tuple[bytes, ...]:
    """One character's 7 cell rows at `scale`, each ``6 * scale`` bytes wide (the trailing blank column
    included)."""
    art = _FONT_ART.get(ch)
    if art is None:
        raise ValueError(f"character {ch!r} is not in the clock font; have {CHARSET!r}")
    ink, paper = bytes((INK,)) * scale, bytes((PAPER,)) * scale
    return tuple(b"".join(ink if c == "#" else paper for c in row) + paper for row in art)


@lru_cache(maxsize=64)
def _blank_row(width: int) -> bytes:
    return bytes((PAPER,)) * width


def _nearest(bits: int) -> str:
    best, best_distance = " ", 36
    for ch, glyph in _BITS.items():
        distance = (bits ^ glyph).bit_count()
        if distance < best_distance:
            best, best_distance = ch, distance
    return best


def glyph_distances() -> Sequence[tuple[int, str, str]]:
    """How far apart the glyphs are: reading survives fewer than half the smallest distance in wrong cells.

    Returns:
        (Hamming distance, glyph, glyph) for every pair, smallest distance first.
    """
    chars = list(_BITS)
    return sorted(
        ((_BITS[a] ^ _BITS[b]).bit_count(), a, b) for i, a in enumerate(chars) for b in chars[i + 1 :]
    )
