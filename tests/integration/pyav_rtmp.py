"""Enhanced RTMP peers from the FFmpeg inside the PyAV wheel (Debian's ffmpeg 5.1 predates E-RTMP).

python -m tests.integration.pyav_rtmp publish URL SECONDS   # HEVC (libx265), 25 fps, 1 s GOP
python -m tests.integration.pyav_rtmp play URL              # prints one JSON line of what it got
"""

from __future__ import annotations

import fractions
import json
import sys

import av

FPS = 25


def publish(url: str, seconds: float) -> None:
    out = av.open(url, "w", format="flv")
    stream = out.add_stream("libx265", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
    stream.options = {"x265-params": f"keyint={FPS}:min-keyint={FPS}:log-level=error"}
    for i in range(int(seconds * FPS)):
        frame = av.VideoFrame(320, 240, "yuv420p")
        for n, plane in enumerate(frame.planes):
            plane.update(bytes([(i * 7 + n * 40) % 256]) * plane.buffer_size)
        frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()


def play(url: str) -> None:
    # rtmp_enhanced_codecs makes FFmpeg announce fourCcList in connect (Enhanced RTMP v1).
    container = av.open(url, options={"rtmp_enhanced_codecs": "hvc1,av01,vp09"}, timeout=20)
    video = container.streams.video[0]
    frames = keyframes = 0
    for packet in container.demux(video):
        if packet.size == 0:
            continue
        for _ in packet.decode():
            frames += 1
        keyframes += int(packet.is_keyframe)
    print(
        json.dumps(
            {
                "codec": video.codec_context.name,
                "width": video.codec_context.width,
                "height": video.codec_context.height,
                "frames": frames,
                "keyframes": keyframes,
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "publish":
        publish(sys.argv[2], float(sys.argv[3]))
    else:
        play(sys.argv[2])
