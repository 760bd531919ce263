"""Publish H.264 with B-frames (x264's defaults, as OBS sends) over RTMP in real time, with PyAV:

    python publish_bframes.py rtmp://127.0.0.1:PORT/live/KEY SECONDS

A moving 320x240 picture at 15 fps, 1 s GOP, no audio.
"""

from __future__ import annotations

import fractions
import sys
import time

import av

FPS = 15


def main(url: str, seconds: float) -> None:
    out = av.open(url, "w", format="flv")
    stream = out.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
    stream.options = {"x264-params": f"keyint={FPS}:min-keyint={FPS}:bframes=3:log-level=error"}
    start = time.monotonic()
    for i in range(int(seconds * FPS)):
        frame = av.VideoFrame(320, 240, "yuv420p")
        for n, plane in enumerate(frame.planes):
            row = bytes((x + i * 8 + n * 40) % 256 for x in range(plane.line_size))
            plane.update(row * (plane.buffer_size // plane.line_size))
        frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
        for packet in stream.encode(frame):
            out.mux(packet)
        delay = start + (i + 1) / FPS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for packet in stream.encode():
        out.mux(packet)
    out.close()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
