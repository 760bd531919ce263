"""Fuzzing the server core from a seed corpus of real client sessions (tests/fixtures/rtmp/*.bin).

Each seed is what ffmpeg, rtmpdump or GStreamer sent to the relay (capture.py there re-makes them). As
they are, every seed must give the events that client means; mutated anywhere past the handshake, they
must give events or `RemoteProtocolError`, never any other exception: a bad client costs its own
connection and nothing else. `make test-slow` runs these with APPLIANCE_FUZZ_SCALE raised.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.media import flv
from appliance.media.rtmp import amf0
from appliance.media.rtmp.errors import RemoteProtocolError
from appliance.media.rtmp.events import (
    ConnectRequested,
    DataReceived,
    Event,
    MediaReceived,
    PlayRequested,
    PublishRequested,
)
from appliance.media.rtmp.session import ServerSession
from tests.fuzz import examples

CORPUS = {
    p.stem: p.read_bytes() for p in sorted((Path(__file__).parents[1] / "fixtures" / "rtmp").glob("*.bin"))
}
HANDSHAKE = 1 + 1536 + 1536


def run(data: bytes, cuts: list[int] | None = None) -> list[Event]:
    """Feed `data` to a fresh server core (in pieces at `cuts`), answering connect like the driver."""
    server = ServerSession(rng=random.Random(0).randbytes)
    events: list[Event] = []
    pieces = [data] if not cuts else [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    for piece in pieces:
        if not piece:
            continue
        for event in server.receive_data(piece):
            events.append(event)
            if isinstance(event, ConnectRequested):
                events += server.accept_connect()
        server.data_to_send()
    return events


def test_corpus_is_there() -> None:
    assert {
        "ffmpeg-publish",
        "ffmpeg-play",
        "rtmpdump-play",
        "gst-rtmp2sink-publish",
        "gst-rtmpsink-publish",
    } <= set(CORPUS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_real_session_means_what_its_client_meant(name: str) -> None:
    events = run(CORPUS[name])
    (connect,) = [e for e in events if isinstance(e, ConnectRequested)]
    assert connect.app == "live"
    if name.endswith("publish"):
        (publish,) = [e for e in events if isinstance(e, PublishRequested)]
        assert publish.name.startswith("seed")
        media = [e for e in events if isinstance(e, MediaReceived)]
        video = [flv.parse_video(e.payload, e.timestamp) for e in media if e.type_id == 9]
        assert isinstance(video[0], flv.MediaConfig), "the first video message is the AVC sequence header"
        assert any(isinstance(v, flv.MediaPacket) and v.packet.keyframe for v in video)
        if name.startswith("ffmpeg"):
            assert any(isinstance(e, DataReceived) and e.name == "onMetaData" for e in events)
    else:
        (play,) = [e for e in events if isinstance(e, PlayRequested)]
        assert play.name == "base"


@settings(max_examples=examples(300))
@given(
    st.sampled_from(sorted(CORPUS)),
    st.lists(st.tuples(st.integers(HANDSHAKE, 48 * 1024), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(HANDSHAKE, 48 * 1024),
)
def test_mutated_sessions_give_events_or_a_protocol_error(
    name: str, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(CORPUS[name][:cut])
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    with contextlib.suppress(RemoteProtocolError):
        run(bytes(data))


@settings(max_examples=examples(200))
@given(st.sampled_from(sorted(CORPUS)), st.binary(min_size=1, max_size=64), st.integers(HANDSHAKE, 8000))
def test_spliced_garbage_gives_events_or_a_protocol_error(name: str, garbage: bytes, at: int) -> None:
    seed = CORPUS[name]
    with contextlib.suppress(RemoteProtocolError):
        run(seed[:at] + garbage + seed[at:])


@settings(max_examples=examples(300))
@given(st.binary(max_size=512))
def test_amf0_decoder_takes_any_bytes(data: bytes) -> None:
    with contextlib.suppress(amf0.AMFError):
        amf0.decode_all(data)


@settings(max_examples=examples(50))
@given(st.sampled_from(sorted(CORPUS)), st.lists(st.integers(1, 48 * 1024), max_size=30))
def test_real_sessions_split_anywhere_give_the_same_events(name: str, cuts: list[int]) -> None:
    data = CORPUS[name]
    assert run(data, sorted(c for c in cuts if c < len(data))) == run(data)
