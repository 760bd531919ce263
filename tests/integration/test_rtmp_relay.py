"""The relay in-process over loopback with our own RTMP client: what each player sees, message by message.

These tests pin down the protocol behaviour (status codes, the order of what a late joiner gets, what
happens on publisher loss, backpressure, bad input); the interop tests check real peers agree with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from appliance.bus import BusRegistry
from appliance.config import Address, AppAuth, RtmpConfig
from appliance.config import load as load_config
from appliance.media import flv, h264
from appliance.media.packets import Codec, CodecConfig, Kind, Packet
from appliance.media.rtmp.chunk import MessageType
from appliance.media.rtmp.client import RtmpClient, RtmpUrl, StatusError
from appliance.media.rtmp.errors import RemoteProtocolError
from appliance.media.rtmp.events import ConnectionClosed, DataReceived, Event, MediaReceived, StatusReceived
from appliance.media.rtmp.server import RtmpServer

SPS = bytes.fromhex("6742c00dda0507ec0440000003004000000c83c50aa8")  # x264 baseline 320x240
PPS = bytes.fromhex("68ce0fc8")
AVC = CodecConfig(kind=Kind.VIDEO, codec=Codec.H264, data=h264.build_avc_config([SPS], [PPS]))
ASC = CodecConfig(kind=Kind.AUDIO, codec=Codec.AAC, data=bytes.fromhex("1210"))  # AAC-LC 44.1 kHz stereo


def frame(ts: int, key: bool, size: int = 50) -> bytes:
    nal = (b"\x65" if key else b"\x41") + bytes([ts & 0xFF]) * size
    packet = Packet(
        kind=Kind.VIDEO,
        codec=Codec.H264,
        payload=len(nal).to_bytes(4, "big") + nal,
        pts_ms=ts,
        dts_ms=ts,
        keyframe=key,
    )
    return flv.video_body(packet)


def audio(ts: int) -> bytes:
    return flv.audio_body(
        Packet(kind=Kind.AUDIO, codec=Codec.AAC, payload=b"\x21" * 20, pts_ms=ts, dts_ms=ts, keyframe=True),
        ASC,
    )


def rtmp_config(**changes: object) -> RtmpConfig:
    base = load_config({"rtmp": {"listen": "127.0.0.1:0", "max_lag": "1s"}}).rtmp
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


class Env:
    """A running server and the clients a test opened (closed at the end, so no socket leaks)."""

    def __init__(self, server: RtmpServer, addr: Address) -> None:
        self.server = server
        self.addr = addr
        self.clients: list[RtmpClient] = []

    def url(self, path: str) -> RtmpUrl:
        app, _, name = path.partition("/")
        return RtmpUrl(self.addr.host, self.addr.port, app, name)

    async def connect(self, path: str, fourcc_list: tuple[str, ...] = ()) -> RtmpClient:
        client = await RtmpClient.connect(self.url(path), fourcc_list=fourcc_list)
        self.clients.append(client)
        return client


@asynccontextmanager
async def running(cfg: RtmpConfig | None = None) -> AsyncIterator[Env]:
    server = RtmpServer(cfg or rtmp_config(), BusRegistry())
    async with trio.open_nursery() as nursery:
        (addr, *_) = await nursery.start(server.serve)
        env = Env(server, addr)
        try:
            yield env
        finally:
            for client in env.clients:
                await client.aclose()
            nursery.cancel_scope.cancel()


class Publisher:
    def __init__(self, client: RtmpClient, sid: int) -> None:
        self.client, self.sid = client, sid

    @classmethod
    async def open(cls, env: Env, path: str, *, headers: bool = True) -> Publisher:
        client = await env.connect(path)
        sid = await client.publish(path.partition("/")[2])
        pub = cls(client, sid)
        if headers:
            await pub.send(
                MessageType.DATA_AMF0,
                0,
                flv.metadata_body({"width": 320.0, "height": 240.0, "framerate": 25.0}),
            )
            await pub.send(MessageType.VIDEO, 0, flv.video_config_body(AVC))
            await pub.send(MessageType.AUDIO, 0, flv.audio_config_body(ASC))
        return pub

    async def send(self, type_id: MessageType, ts: int, body: bytes) -> None:
        if type_id == MessageType.DATA_AMF0 and body.startswith(b"\x02\x00\x0aonMetaData"):
            from appliance.media.rtmp import amf0

            body = amf0.encode("@setDataFrame") + body
        await self.client.send_media(self.sid, type_id, ts, body)

    async def gop(self, start: int, frames: int = 10) -> None:
        for i in range(frames):
            ts = start + i * 40
            await self.send(MessageType.VIDEO, ts, frame(ts, key=i == 0))
            await self.send(MessageType.AUDIO, ts, audio(ts))


async def until(client: RtmpClient, match: Callable[[Event], bool], limit: int = 500) -> list[Event]:
    """Events up to and including the first that matches."""
    seen: list[Event] = []
    with trio.fail_after(5):
        while len(seen) < limit:
            event = await client.next_event()
            seen.append(event)
            if match(event):
                return seen
            if isinstance(event, ConnectionClosed):
                break
    raise AssertionError(f"no match in {seen[-10:]}")


def status(code: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, StatusReceived) and e.code == code


def video(e: Event) -> bool:
    return isinstance(e, MediaReceived) and e.type_id == MessageType.VIDEO


def media(events: list[Event]) -> list[tuple[int, int, bytes]]:
    return [(e.type_id, e.timestamp, e.payload) for e in events if isinstance(e, MediaReceived)]


async def test_player_waits_for_publisher_and_gets_headers_then_frames() -> None:
    async with running() as env:
        player = await env.connect("live/a")
        await player.play("a")
        pub = await Publisher.open(env, "live/a")
        await pub.gop(1000)
        seen = await until(
            player, lambda e: isinstance(e, MediaReceived) and e.timestamp == 1360 and e.type_id == 8
        )
        meta = [e for e in seen if isinstance(e, DataReceived) and e.name == "onMetaData"]
        assert meta and dict(meta[0].args[0])["width"] == 320.0  # type: ignore[call-overload]
        got = media(seen)
        assert got[0] == (MessageType.VIDEO, 0, flv.video_config_body(AVC))
        assert got[1] == (MessageType.AUDIO, 0, flv.audio_config_body(ASC))
        assert [t for t, _, _ in got[2:4]] == [MessageType.VIDEO, MessageType.AUDIO]
        assert got[2][1:] == (1000, frame(1000, key=True))


async def test_players_share_the_chunks_built_once_per_packet() -> None:
    async with running() as env:
        players = [await env.connect("live/share") for _ in range(3)]
        for p in players:
            await p.play("share")
        pub = await Publisher.open(env, "live/share")
        await pub.gop(0)
        for p in players:
            await until(p, lambda e: isinstance(e, MediaReceived) and e.type_id == 8 and e.timestamp == 360)
        cache = env.server._caches["live/share"]
        assert cache.misses == 20  # 10 video + 10 audio packets, each built once
        assert cache.hits == 2 * cache.misses


async def test_late_joiner_starts_at_the_cached_keyframe() -> None:
    async with running() as env:
        pub = await Publisher.open(env, "live/b")
        await pub.gop(0)
        await pub.gop(400, frames=5)  # the current GOP: keyframe at 400, frames to 560
        await trio.sleep(0.1)
        player = await env.connect("live/b")
        await player.play("b")
        seen = await until(
            player, lambda e: isinstance(e, MediaReceived) and e.type_id == 8 and e.timestamp == 560
        )
        got = media(seen)
        kinds_and_ts = [(t, ts) for t, ts, _ in got]
        # Sequence headers first, then exactly the GOP from its keyframe, timestamps as published.
        assert kinds_and_ts[:2] == [(9, 400), (8, 400)] or kinds_and_ts[0][1] == kinds_and_ts[1][1]
        frames = [(ts, body) for t, ts, body in got if t == 9 and body[1] == 1]
        assert frames[0] == (400, frame(400, key=True))
        assert [ts for ts, _ in frames] == [400, 440, 480, 520, 560]


async def test_publisher_loss_unpublish_notify_then_republish_continues() -> None:
    async with running() as env:
        player = await env.connect("live/c")
        await player.play("c")
        pub = await Publisher.open(env, "live/c")
        await pub.gop(0)
        await until(player, lambda e: video(e) and e.timestamp == 360)
        await pub.client.aclose()
        await until(player, status("NetStream.Play.UnpublishNotify"))
        pub2 = await Publisher.open(env, "live/c")
        await pub2.gop(0)  # a new publisher starts its clock at 0 again
        seen = await until(player, lambda e: video(e) and e.payload == frame(360, key=False))
        assert any(status("NetStream.Play.PublishNotify")(e) for e in seen)
        headers = [e for e in seen if video(e) and e.payload == flv.video_config_body(AVC)]
        assert headers, "the new publisher's sequence header was not sent"
        stamps = [e.timestamp for e in seen if video(e) and e.payload[1] == 1]
        assert stamps == sorted(stamps) and stamps[0] > 360, "timestamps must continue, not restart"


@pytest.mark.parametrize("replace", [True, False])
async def test_second_publisher_replaces_or_is_refused(replace: bool) -> None:
    async with running(rtmp_config(replace_publisher=replace)) as env:
        server = env.server
        first = await Publisher.open(env, "live/d")
        second_client = await env.connect("live/d")
        if replace:
            await second_client.publish("d")
            await until(first.client, lambda e: isinstance(e, ConnectionClosed))
            assert server.publishers["live/d"].cid != 1
        else:
            with pytest.raises(StatusError, match=r"NetStream.Publish.BadName"):
                await second_client.publish("d")


async def test_publish_and_play_secrets() -> None:
    auth = {"live": AppAuth(publish=("pubsecret", "streamkey123"), play=("watch",))}
    async with running(rtmp_config(auth=auth)) as env:
        client = await env.connect("live/e")
        with pytest.raises(StatusError, match=r"NetStream.Publish.Denied"):
            await client.publish("e")
        ok = await env.connect("live/e")
        await ok.publish("e?key=pubsecret")
        allow_listed = await env.connect("live/streamkey123")
        await allow_listed.publish("streamkey123")
        player = await env.connect("live/e")
        with pytest.raises(StatusError, match=r"NetStream.Play.Failed"):
            await player.play("e")
        viewer = await env.connect("live/e")
        await viewer.play("e?key=watch")


async def test_unknown_app_is_refused_at_connect() -> None:
    async with running() as env:
        with pytest.raises(RemoteProtocolError, match=r"NetConnection.Connect.InvalidApp"):
            await env.connect("nope/x")


HVCC = bytes.fromhex(
    "01016000000090000000000000f000fcfdf8f800000f03200001000c40010c01ffff016000000300900000030000030078959809"
)


async def test_hevc_goes_to_enhanced_players_and_legacy_players_get_a_clear_error() -> None:
    config = CodecConfig(kind=Kind.VIDEO, codec=Codec.HEVC, data=HVCC)
    async with running() as env:
        legacy = await env.connect("live/h")
        await legacy.play("h")
        enhanced = await env.connect("live/h", fourcc_list=("hvc1", "av01"))
        await enhanced.play("h")
        pub = await Publisher.open(env, "live/h", headers=False)
        await pub.send(MessageType.VIDEO, 0, flv.video_config_body(config))
        nal = b"\x26\x01" + b"\x55" * 30
        key = Packet(
            kind=Kind.VIDEO,
            codec=Codec.HEVC,
            payload=len(nal).to_bytes(4, "big") + nal,
            pts_ms=0,
            dts_ms=0,
            keyframe=True,
        )
        await pub.send(MessageType.VIDEO, 0, flv.video_body(key))
        failed = (await until(legacy, status("NetStream.Play.Failed")))[-1]
        assert (
            isinstance(failed, StatusReceived)
            and "Enhanced RTMP" in failed.description
            and "hvc1" in failed.description
        )
        seen = await until(enhanced, lambda e: video(e) and e.payload == flv.video_body(key))
        assert any(video(e) and e.payload == flv.video_config_body(config) for e in seen)


async def test_malformed_chunk_closes_only_that_connection() -> None:
    async with running() as env:
        player = await env.connect("live/m")
        await player.play("m")
        pub = await Publisher.open(env, "live/m")
        bad = await env.connect("live/x")
        # A format-1 header on a chunk stream never opened: a protocol error.
        await bad.stream.send_all(b"\x49" + bytes(7) + b"x")
        assert isinstance((await until(bad, lambda e: isinstance(e, ConnectionClosed)))[-1], ConnectionClosed)
        await pub.gop(0)
        await until(player, lambda e: video(e) and e.timestamp == 360)


async def test_player_that_stops_reading_is_cut_off_and_others_keep_going() -> None:
    async with running(rtmp_config(max_lag_s=1.0, queue=64)) as env:
        server = env.server
        pub = await Publisher.open(env, "live/s")
        slow = await env.connect("live/s")
        await slow.play("s")  # ... and never reads again
        fast = await env.connect("live/s")
        await fast.play("s")
        ts = 0
        with trio.fail_after(20):
            while len(server.clients) == 3:
                for i in range(5):
                    await pub.send(MessageType.VIDEO, ts, frame(ts, key=i == 0, size=60_000))
                    ts += 40
                await until(fast, lambda e, t=ts - 40: video(e) and e.timestamp == t, limit=10_000)
        assert len(server.clients) == 2  # the publisher and the fast player remain


async def test_silent_publisher_is_closed_but_a_waiting_player_is_not() -> None:
    async with running(rtmp_config(idle_timeout_s=0.5)) as env:
        server = env.server
        waiting = await env.connect("live/q")
        await waiting.play("q")  # no publisher: it may wait as long as it likes
        silent = await Publisher.open(env, "live/w")  # publishes, then sends nothing
        await until(silent.client, lambda e: isinstance(e, ConnectionClosed))
        await trio.sleep(0.6)  # another idle period
        (left,) = server.clients.values()
        assert left.playing and left.closing is None
