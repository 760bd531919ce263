"""The WebRTC package's parts that need aiortc (the `webrtc` extra) but no peer: the av.Packet cache shared
by viewers, the profiles the answer offers, and the asyncio loop thread's bridge to trio (results,
errors, cancellation, callbacks both ways, the UDP port range)."""

from __future__ import annotations

import asyncio
import socket
from fractions import Fraction

import pytest
import trio

from appliance.media.packets import Codec, Kind, Packet
from appliance.media.webrtc.negotiation import START, keyframe_prefix, sdp_profile
from tests.peers import peers_required

try:
    from appliance.media.webrtc.loop import AsyncioThread, PortRangeExhaustedError
    from appliance.media.webrtc.tracks import TRACK_QUEUE, PassthroughTrack, _h264_preferences
    from appliance.media.webrtc.whep import _VideoCache
except ImportError:  # pragma: no cover - without the extra
    if peers_required():
        raise
    # Only when APPLIANCE_REQUIRE_PEERS is unset: checked just above.
    pytest.skip("aiortc (the webrtc extra) is not installed", allow_module_level=True)  # REQUIRE_PEERS


def packet(payload: bytes, *, pts: int = 0, dts: int = 0, key: bool = False) -> Packet:
    return Packet(kind=Kind.VIDEO, codec=Codec.H264, payload=payload, pts_ms=pts, dts_ms=dts, keyframe=key)


def nal(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def test_keyframes_get_the_parameter_sets_in_front_and_each_packet_converts_once() -> None:
    prefix = keyframe_prefix([b"\x67sps"], [b"\x68pps"])
    assert prefix == START + b"\x67sps" + START + b"\x68pps"
    cache = _VideoCache(size=2)
    key = packet(nal(b"\x65ab") + nal(b"\x06x"), pts=1000, key=True)
    first = cache.get(key, prefix)
    assert bytes(first) == prefix + START + b"\x65ab" + START + b"\x06x"
    assert first.pts == 90_000 and first.time_base == Fraction(1, 90000)
    assert cache.get(key, prefix) is first  # shared by every viewer
    delta = packet(nal(b"\x41cd"), pts=1066)
    assert bytes(cache.get(delta, prefix)) == START + b"\x41cd"  # no parameter sets before a delta frame
    with pytest.raises(ValueError):
        cache.get(packet((9).to_bytes(4, "big") + b"\x65"), prefix)


def test_the_answer_offers_only_the_streams_profile() -> None:
    for plid in ("42e01f", "640c1f", "4d0029"):
        preferences = _h264_preferences(plid)
        assert preferences and all(c.mimeType == "video/H264" for c in preferences)
        assert {sdp_profile(str(c.parameters["profile-level-id"])) for c in preferences} == {
            sdp_profile(plid)
        }
        assert all(c.parameters["packetization-mode"] == "1" for c in preferences)
        assert _h264_preferences(plid) == preferences  # the codec table grows once per profile


async def test_trio_awaits_coroutines_on_the_loop_thread_and_gets_results_and_errors() -> None:
    bridge = AsyncioThread()
    bridge.start()
    try:

        async def add(a: int, b: int) -> int:
            await asyncio.sleep(0)
            return a + b

        async def fail() -> None:
            raise KeyError("boom")

        assert await bridge.run(add(2, 3)) == 5
        with pytest.raises(KeyError, match="boom"):
            await bridge.run(fail())
        # Callbacks both ways: trio posts to the loop, the loop calls back into trio.
        got: list[str] = []
        arrived = trio.Event()

        def on_trio(value: str) -> None:
            got.append(value)
            arrived.set()

        bridge.post(lambda: bridge.to_trio(on_trio, "hello"))
        await arrived.wait()
        assert got == ["hello"]
    finally:
        bridge.stop()


async def test_cancelling_the_trio_side_cancels_the_coroutine() -> None:
    bridge = AsyncioThread()
    bridge.start()
    cancelled = trio.Event()
    started = trio.Event()
    try:

        async def forever() -> None:
            bridge.to_trio(started.set)
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                bridge.to_trio(cancelled.set)
                raise

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bridge.run, forever())
            await started.wait()
            nursery.cancel_scope.cancel()
        await cancelled.wait()
        assert cancelled.is_set()
    finally:
        bridge.stop()


async def test_udp_sockets_take_ports_of_the_configured_range() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    first = probe.getsockname()[1]
    probe.close()
    ports = range(first, first + 2)
    bridge = AsyncioThread(udp_ports=ports)
    bridge.start()
    try:

        async def bind_three() -> tuple[list[int], str]:
            loop = asyncio.get_running_loop()
            transports = []
            try:
                for _ in range(2):
                    transport, _protocol = await loop.create_datagram_endpoint(
                        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
                    )
                    transports.append(transport)
                try:
                    await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
                except PortRangeExhaustedError as e:
                    error = str(e)
                else:
                    error = ""
                return [t.get_extra_info("sockname")[1] for t in transports], error
            finally:
                for t in transports:
                    t.close()

        bound, error = await bridge.run(bind_three())
        assert sorted(bound) == list(ports)
        assert "webrtc.udp_ports" in error
    finally:
        bridge.stop()


def test_a_slow_viewers_track_drops_to_the_next_keyframe() -> None:
    track = PassthroughTrack()
    track.push("delta-before-any-key", keyframe=False)  # type: ignore[arg-type]
    assert track.dropped == 1 and track._queue.qsize() == 0  # a viewer starts at a keyframe
    track.push("key", keyframe=True)  # type: ignore[arg-type]
    for i in range(TRACK_QUEUE - 1):
        track.push(f"delta{i}", keyframe=False)  # type: ignore[arg-type]
    assert track._queue.full() and track.dropped == 1
    # The sender fell this far behind: everything queued goes, and so does what follows until a keyframe.
    track.push("one-too-many", keyframe=False)  # type: ignore[arg-type]
    assert track._queue.qsize() == 0 and track.dropped == 1 + TRACK_QUEUE + 1
    track.push("late-delta", keyframe=False)  # type: ignore[arg-type]
    assert track._queue.qsize() == 0
    track.push("next-key", keyframe=True)  # type: ignore[arg-type]
    assert track._queue.get_nowait() == "next-key"
