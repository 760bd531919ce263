"""The clock font: rows, drawing into a plane, bounds, and reading back through a real H.264 round trip."""

from __future__ import annotations

import fractions
import time

import av
import av.video.codeccontext
import pytest
from av.filter import Graph

from appliance.media import clockfont
from appliance.media.clockfont import CHARSET, INK, PAPER, draw_text, read_text, render_rows, text_size

CLOCK = "2025-06-30 23:59:58.125"  # what the synthetic camera draws


def test_rows_are_the_box_size_and_ink_on_paper() -> None:
    rows = render_rows("1:", 2)
    assert len(rows) == 9 * 2 == text_size(2, 2)[1]
    assert {len(r) for r in rows} == {(6 * 2 + 1) * 2} == {text_size(2, 2)[0]}
    assert set(b"".join(rows)) == {INK, PAPER}
    # One-cell margin: the first and last two rows (scale 2) and columns are paper.
    assert rows[0] == rows[1] == rows[-1] == bytes([PAPER]) * len(rows[0])
    assert all(r[:2] == bytes([PAPER, PAPER]) and r[-2:] == bytes([PAPER, PAPER]) for r in rows)
    # The "1" glyph's top row, "..#..", at scale 2: cells 2 (x 2..3) after the 2-pixel margin.
    assert rows[2][2:14] == bytes([PAPER] * 4 + [INK] * 2 + [PAPER] * 6)


def test_render_matches_the_glyph_art() -> None:
    for ch in CHARSET:
        rows = render_rows(ch, 1)
        art = ["".join("#" if v == INK else "." for v in row[1:6]) for row in rows[1:8]]
        assert tuple(art) == clockfont._FONT_ART[ch]


def test_empty_text_is_just_the_margin() -> None:
    assert text_size(0, 3) == (3, 27)
    assert render_rows("", 3) == [bytes([PAPER] * 3)] * 27


def test_draw_writes_only_the_box() -> None:
    linesize, rows = 64, 20
    plane = bytearray(b"\x80" * linesize * rows)
    draw_text(plane, linesize, 5, 3, "42", 1)
    w, h = text_size(2, 1)
    for yy in range(rows):
        line = plane[yy * linesize : (yy + 1) * linesize]
        if 3 <= yy < 3 + h:
            assert line[:5] == b"\x80" * 5 and line[5 + w :] == b"\x80" * (linesize - 5 - w)
            assert line[5 : 5 + w] == render_rows("42", 1)[yy - 3]
        else:
            assert line == b"\x80" * linesize
    assert read_text(bytes(plane), linesize, 5, 3, 2, 1) == "42"


@pytest.mark.parametrize(
    ("x", "y", "text", "scale"),
    [
        (60, 0, "1", 1),  # 7 wide at x=60 in a 64-byte stride
        (0, 12, "1", 1),  # 9 tall at y=12 in 20 rows
        (-1, 0, "1", 1),
        (0, -1, "1", 1),
        (0, 0, "123456789", 2),  # 110 wide
    ],
)
def test_text_that_does_not_fit_raises_and_writes_nothing(x: int, y: int, text: str, scale: int) -> None:
    plane = bytearray(64 * 20)
    with pytest.raises(ValueError, match="does not fit"):
        draw_text(plane, 64, x, y, text, scale)
    assert plane == bytearray(64 * 20)
    with pytest.raises(ValueError, match="does not fit"):
        read_text(bytes(plane), 64, x, y, len(text), scale)


def test_bad_characters_and_scales_raise() -> None:
    plane = bytearray(640 * 100)
    with pytest.raises(ValueError, match="'x' is not in the clock font"):
        draw_text(plane, 640, 0, 0, "12x", 1)
    with pytest.raises(ValueError, match="scale=0"):
        draw_text(plane, 640, 0, 0, "12", 0)
    with pytest.raises(ValueError, match="linesize=0"):
        draw_text(plane, 0, 0, 0, "12", 1)
    with pytest.raises(ValueError, match="length=-1"):
        text_size(-1, 1)
    assert plane == bytearray(640 * 100)


def test_every_glyph_reads_back_exactly() -> None:
    text = CHARSET
    w, h = text_size(len(text), 2)
    plane = bytearray(w * h)
    draw_text(plane, w, 0, 0, text, 2)
    assert read_text(bytes(plane), w, 0, 0, len(text), 2) == text


def test_glyphs_are_far_enough_apart_to_survive_a_wrong_cell() -> None:
    assert clockfont.glyph_distances()[0][0] >= 4


def test_reading_survives_a_wrong_cell_per_glyph() -> None:
    scale = 4
    w, h = text_size(len(CLOCK), scale)
    plane = bytearray(w * h)
    draw_text(plane, w, 0, 0, CLOCK, scale)
    # Flip the centre cell (row 3, column 2) of every glyph.
    for i in range(len(CLOCK)):
        cx = (1 + 6 * i + 2) * scale
        cy = (1 + 3) * scale
        for yy in range(cy, cy + scale):
            for xx in range(cx, cx + scale):
                plane[yy * w + xx] = INK + PAPER - plane[yy * w + xx]
    assert read_text(bytes(plane), w, 0, 0, len(CLOCK), scale) == CLOCK


def test_drawing_a_1080p_clock_is_cheap() -> None:
    frame = av.VideoFrame(1920, 1080, "yuv420p")
    plane = memoryview(frame.planes[0])
    linesize = frame.planes[0].line_size
    runs = 300
    start = time.perf_counter()
    for i in range(runs):
        draw_text(plane, linesize, 48, 48, f"12:34:56.{i % 1000:03d}", 6)
    per_draw = (time.perf_counter() - start) / runs
    assert per_draw < 0.001, per_draw  # measured about 15 us; 1 ms is 3% of a 30 fps frame


def _encode_decode(frames: list[av.VideoFrame], bitrate_bps: int) -> list[av.VideoFrame]:
    enc = av.CodecContext.create("libx264", "w")
    assert isinstance(enc, av.video.codeccontext.VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    enc.framerate = fractions.Fraction(30)
    enc.bit_rate = bitrate_bps
    enc.gop_size = 30
    enc.max_b_frames = 0
    enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
    dec = av.CodecContext.create("h264", "r")
    assert isinstance(dec, av.video.codeccontext.VideoCodecContext)
    out: list[av.VideoFrame] = []
    packets = []
    for i, frame in enumerate(frames):
        frame.pts = i
        # testsrc2 marks every frame an I picture, which libx264 takes as a request for an IDR.
        frame.pict_type = av.video.frame.PictureType.NONE
        packets += enc.encode(frame)
    packets += enc.encode(None)
    for packet in packets:
        out += dec.decode(packet)
    out += dec.decode(None)
    return out


def _testsrc2(count: int) -> list[av.VideoFrame]:
    """Frames of lavfi's testsrc2 (moving bars and shapes), the synthetic camera's picture."""
    graph = Graph()
    src = graph.add("testsrc2", "size=1280x720:rate=30")
    fmt = graph.add("format", "yuv420p")
    sink = graph.add("buffersink")
    src.link_to(fmt)
    fmt.link_to(sink)
    graph.configure()
    frames = []
    for _ in range(count):
        frame = sink.pull()
        assert isinstance(frame, av.VideoFrame)
        frames.append(frame)
    return frames


@pytest.mark.parametrize("scale", [2, 4])
def test_round_trip_through_libx264(scale: int) -> None:
    x, y = 8 * scale, 8 * scale  # where the synthetic camera puts it
    texts = [f"2025-06-30 23:59:{58 + i // 30:02d}.{(i * 33) % 1000:03d}" for i in range(45)]
    frames = _testsrc2(len(texts))
    assert (frames[0].width, frames[0].height, frames[0].format.name) == (1280, 720, "yuv420p")
    for frame, text in zip(frames, texts, strict=True):
        draw_text(memoryview(frame.planes[0]), frame.planes[0].line_size, x, y, text, scale)
    decoded = _encode_decode(frames, 500_000)  # a modest rate for 720p30
    assert len(decoded) == len(texts)
    read = [read_text(bytes(f.planes[0]), f.planes[0].line_size, x, y, len(CLOCK), scale) for f in decoded]
    assert read == texts


def test_round_trip_from_a_blank_frame() -> None:
    frame = av.VideoFrame(1280, 720, "yuv420p")
    for plane in frame.planes:
        plane.update(b"\x80" * plane.buffer_size)
    draw_text(memoryview(frame.planes[0]), frame.planes[0].line_size, 100, 600, CLOCK, 3)
    (decoded,) = _encode_decode([frame], 300_000)
    assert read_text(bytes(decoded.planes[0]), decoded.planes[0].line_size, 100, 600, len(CLOCK), 3) == CLOCK
